#!/bin/sh
# The stack's SCRAM users, (re)set on every `up` so that changed passwords take effect. Passwords
# must not contain ',' ']' or '"' (the SCRAM config syntax). Add a tenant the same way, then
# create the ACLs again with it (docs/security.md).
set -eu
cat > /tmp/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-256
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$KAFKA_ADMIN_PASSWORD";
PROPERTIES
add_user() {
  /opt/kafka/bin/kafka-configs.sh --bootstrap-server kafka:9092 --command-config /tmp/admin.properties \
    --alter --entity-type users --entity-name "$1" --add-config "SCRAM-SHA-256=[password=$2]"
}
add_user lorastream-inference "$LORASTREAM_INFERENCE_PASSWORD"
add_user lorastream-trainer "$LORASTREAM_TRAINER_PASSWORD"
add_user ops "$LORASTREAM_OPS_PASSWORD"
add_user demo "$LORASTREAM_DEMO_PASSWORD"
add_user lorastream-gateway "$LORASTREAM_GATEWAY_PASSWORD"
