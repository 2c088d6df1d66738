#!/bin/bash
# Entry point of the speclake image.
#   executor ...  a Spark on Kubernetes executor pod (Spark passes its settings as SPARK_* variables)
#   anything else runs as given (speclake ..., prefect ..., ray start ...)
set -euo pipefail

if [ "${1:-}" = executor ]; then
  shift
  # Spark hands the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order
  java_opts=()
  for i in $(seq 0 1000); do
    name="SPARK_JAVA_OPT_$i"
    [ -n "${!name+x}" ] || break
    java_opts+=("${!name}")
  done
  classpath="${SPARK_HOME}/conf:${SPARK_HOME}/jars/*${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}"
  exec "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
    "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" -cp "$classpath" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "$SPARK_DRIVER_URL" --executor-id "$SPARK_EXECUTOR_ID" --cores "$SPARK_EXECUTOR_CORES" \
    --app-id "$SPARK_APPLICATION_ID" --hostname "$SPARK_EXECUTOR_POD_IP" \
    --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" --podName "$SPARK_EXECUTOR_POD_NAME"
fi
exec "$@"
