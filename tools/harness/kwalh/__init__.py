"""kwalh -- kwal's Python test harness (stdlib only).

Services and processes:
    kafka     a real Apache Kafka cluster (1 or 3 KRaft nodes) on loopback,
              with node faults (stop, SIGKILL, SIGSTOP, restart) and topic
              administration through Kafka's own tools and kcat
    services  ZooKeeper (kwal-zk-local) and one Kafka interface over the real
              cluster and librdkafka's mock
    proc      where the programs are; every process a runner starts, so that
              it ends only its own
    kwal      one kwal run: its configuration, signals, exit status and
              --stats-json statistics (never its log)
    workload  kwal-loadgen and kwal-verify
    measure   programs run with their own CPU, peak RSS and bytes written
              (os.wait4), ZooKeeper offsets with the time they were stored

Runners (each a main(argv); plan and history kept apart from the checkers):
    plan, history, checkers   what a chaos trial does, what happened, and one
                              checker per invariant
    chaos     crash trials (tools/chaos)
    compare   the semantics comparison (tools/compare, `kwal compare`)
    bench     kwal's modes next to kcat and Spark Streaming (tools/bench/bench,
              `kwal bench`)
    resume    time from a restart after SIGKILL to the first record stored
              (tools/bench/bench-resume)

Put <repo>/tools/harness on sys.path (tests/integration/conftest.py and the
entry points do) and `from kwalh.kafka import KafkaCluster`.
"""
