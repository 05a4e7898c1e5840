"""kwalh -- kwal's Python test harness (stdlib only).

Modules:
    kafka   a real Apache Kafka cluster (1 or 3 KRaft nodes) on loopback,
            with node faults (stop, SIGKILL, SIGSTOP, restart) and topic
            administration through Kafka's own tools and kcat.

Put <repo>/tools/harness on sys.path (tests/integration/conftest.py does) and
`from kwalh.kafka import KafkaCluster`.
"""
