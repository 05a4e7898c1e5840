/*
 * SparkDirect -- Spark Streaming's Kafka direct stream reading a topic into
 * files, for the benchmark that sets kwal next to it (tools/bench/). It does
 * what Spark's "Kafka 0.10 integration guide" shows, and nothing cleverer:
 *
 *   1. a JavaStreamingContext with the batch interval (--batch-ms, default
 *      1000) on an in-process master (--master, default local[2]);
 *   2. KafkaUtils.createDirectStream with LocationStrategies.PreferConsistent()
 *      and ConsumerStrategies.Subscribe(topic, params); the params are
 *      bootstrap.servers, group.id, ByteArrayDeserializer for key and value,
 *      auto.offset.reset=earliest and enable.auto.commit=false, then every
 *      --kafka key=value;
 *   3. foreachRDD: the batch's OffsetRanges from ((HasOffsetRanges) rdd.rdd());
 *      one task per Kafka partition (a KafkaRDD partition is one offset
 *      range) writes its records to OUTDIR/batch-<batch time ms>/part-<kafka
 *      partition>, per record a line "<partition> <offset> <timestamp_ms>
 *      <key bytes> <value bytes>\n" followed by the key, the value and
 *      "\n" (the record itself, as kwal's sinks store it), through a
 *      buffered stream that the task closes; then it takes
 *      the wall clock once and returns to the driver its record count and a
 *      histogram of (that time - record timestamp) per record (records with a
 *      timestamp below 0 are left out, negative latencies count as 0). The
 *      tasks run as mapPartitions + collect, so each record is written once;
 *   4. after the output, ((CanCommitOffsets) stream.inputDStream())
 *      .commitAsync(ranges), as the guide says (the stream commits them to
 *      the group during the next batch's computation);
 *   5. the driver counts the records; once the total reaches --records N a
 *      separate thread stops the context gracefully (stopSparkContext=true);
 *      the main thread waits for it, prints the "done" line and exits 0.
 *
 * A batch whose offset ranges are all empty runs no job, writes no folder
 * and prints nothing. Records read twice (the total exceeds N) are reported
 * as they are: whoever runs this compares the files with the topic.
 *
 * Command line (jvm.options beside pom.xml lists the JVM options Spark needs
 * on Java 17; tools/bench/fetch-spark.sh makes DIR):
 *
 *   java <jvm options> -cp 'DIR/libs/*:DIR/kwal-spark-bench.jar' \
 *       kwal.bench.SparkDirect --bootstrap HOST:PORT[,..] --topic T --group G \
 *       --out OUTDIR --records N [--batch-ms 1000] [--master 'local[2]'] \
 *       [--conf key=value]... [--kafka key=value]... [--stall-timeout-ms 120000]
 *
 * Stdout carries only JSON objects, one per line, each flushed (anything else
 * that writes to System.out goes to stderr). Times are wall-clock ms since
 * the epoch:
 *
 *   {"event":"started","started_ms":S,"ready_ms":R}
 *       after ssc.start() returned (S: when main began, R: then);
 *   {"event":"batch","batch_ms":B,"records":n,"total":t,"done_ms":D}
 *       per batch that had records: B is Spark's batch time (the batch
 *       clock starts inside ssc.start(), so the first B can lie before R), D
 *       the time after the output and commitAsync;
 *   {"event":"done","records":t,"batches":b,"started_ms":S,"ready_ms":R,
 *    "first_out_ms":F,"last_out_ms":L,"latency_ms_p50":..,"latency_ms_p90":..,
 *    "latency_ms_p99":..,"latency_ms_max":..}
 *       after the stop: t all records counted (batches finished during the
 *       graceful stop included), b the batches that had records, F the
 *       done_ms of the first of them, L that of the batch that reached N.
 *       Percentiles are nearest-rank over every record's latency; exact below
 *       2048 ms, above that the upper end of a bucket 1/1024 wide (relative),
 *       never above the exact maximum; null when no record had a timestamp.
 *
 * Spark's and Kafka's logging goes to stderr at WARN (log4j2.properties).
 * Settings: spark.app.name=kwal-spark-direct, spark.master from --master,
 * spark.ui.enabled=false (no web UI port); every other Spark setting is its
 * default (no spark.streaming.kafka.maxRatePerPartition: the first batch
 * reads all there is) unless given with --conf key=value (applied last).
 *
 * Exit status: 0 after "done"; 1 when Spark or Kafka fails (a batch job, the
 * stream's driver consumer, the stop), with one line on stderr; 2 for bad
 * arguments, with one line on stderr.
 *
 * Kafka out of reach is no error to Spark: the stream's driver consumer polls
 * with the old poll(long), which waits for the group coordinator without a
 * time limit, in ssc.start() and then as each batch is generated; so
 * ssc.start() or the generation of batches hangs, and so does a stop
 * (Spark's shutdown hook, run on SIGTERM or exit, waits for the batch
 * generator). So a watchdog thread halts the JVM with status 1 and a line on
 * stderr when ssc.start() has not returned, or no batch has been generated,
 * for --stall-timeout-ms (default 120000; batches are generated on time
 * however far the processing lags, so only a waiting driver stops them);
 * and once the JVM begins to exit (System.exit, SIGTERM), it halts after
 * 15 s if the shutdown hooks have not finished (status 1 then). A halt
 * leaves Spark's temporary folders behind.
 */
package kwal.bench;

import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.spark.SparkConf;
import org.apache.spark.TaskContext;
import org.apache.spark.streaming.Durations;
import org.apache.spark.streaming.api.java.JavaInputDStream;
import org.apache.spark.streaming.api.java.JavaStreamingContext;
import org.apache.spark.streaming.kafka010.CanCommitOffsets;
import org.apache.spark.streaming.kafka010.ConsumerStrategies;
import org.apache.spark.streaming.kafka010.HasOffsetRanges;
import org.apache.spark.streaming.kafka010.KafkaUtils;
import org.apache.spark.streaming.kafka010.LocationStrategies;
import org.apache.spark.streaming.kafka010.OffsetRange;
import org.apache.spark.streaming.scheduler.StreamingListener;
import org.apache.spark.streaming.scheduler.StreamingListenerBatchSubmitted;

public final class SparkDirect {
    private static final String PROG = "spark-direct";

    private SparkDirect() {
    }

    /* ---- command line ---- */

    /** Bad command line: main prints the message and exits 2. */
    private static final class UsageError extends Exception {
        private static final long serialVersionUID = 1L;

        UsageError(String message) {
            super(message);
        }
    }

    private static final String USAGE =
        "usage: SparkDirect --bootstrap HOST:PORT[,..] --topic T --group G --out OUTDIR"
        + " --records N [--batch-ms 1000] [--master 'local[2]'] [--conf key=value]..."
        + " [--kafka key=value]... [--stall-timeout-ms 120000]";

    private static final class Options {
        String bootstrap;
        String topic;
        String group;
        String out;
        long records = -1;
        long batchMs = 1000;
        String master = "local[2]";
        long stallTimeoutMs = 120_000;
        final Map<String, String> conf = new LinkedHashMap<>();
        final Map<String, String> kafka = new LinkedHashMap<>();

        static Options parse(String[] args) throws UsageError {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String name = args[i];
                if (!name.startsWith("--")) {
                    throw new UsageError("unexpected argument '" + name + "'");
                }
                if (i + 1 >= args.length) {
                    throw new UsageError(name + " needs a value");
                }
                String value = args[++i];
                switch (name) {
                case "--bootstrap": o.bootstrap = nonEmpty(name, value); break;
                case "--topic":     o.topic = nonEmpty(name, value); break;
                case "--group":     o.group = nonEmpty(name, value); break;
                case "--out":       o.out = nonEmpty(name, value); break;
                case "--records":   o.records = positive(name, value); break;
                case "--batch-ms":  o.batchMs = positive(name, value); break;
                case "--master":    o.master = nonEmpty(name, value); break;
                case "--stall-timeout-ms": o.stallTimeoutMs = positive(name, value); break;
                case "--conf":      keyValue(name, value, o.conf); break;
                case "--kafka":     keyValue(name, value, o.kafka); break;
                default:
                    throw new UsageError("unknown option " + name);
                }
            }
            if (o.bootstrap == null || o.topic == null || o.group == null || o.out == null
                    || o.records < 0) {
                throw new UsageError("--bootstrap, --topic, --group, --out and --records are required");
            }
            return o;
        }

        private static String nonEmpty(String name, String value) throws UsageError {
            if (value.isEmpty()) {
                throw new UsageError(name + " must not be empty");
            }
            return value;
        }

        private static long positive(String name, String value) throws UsageError {
            long v;
            try {
                v = Long.parseLong(value);
            } catch (NumberFormatException e) {
                throw new UsageError(name + " '" + value + "' is not a whole number");
            }
            if (v <= 0) {
                throw new UsageError(name + " must be at least 1");
            }
            return v;
        }

        private static void keyValue(String name, String value, Map<String, String> into)
                throws UsageError {
            int eq = value.indexOf('=');
            if (eq <= 0) {
                throw new UsageError(name + " '" + value + "' is not key=value");
            }
            into.put(value.substring(0, eq), value.substring(eq + 1));
        }
    }

    /* ---- latency histogram ---- */

    /**
     * Counts of non-negative values (ms): exact for values below 2 * SUB,
     * then log-linear, SUB buckets per power of two (relative width 1/SUB).
     * Bucket index: v below 2 * SUB is its own index; otherwise with
     * shift = msb(v) - SUB_BITS, index = shift * SUB + (v >>> shift), which
     * continues the exact range without a gap. Serialized sparse (only the
     * non-empty buckets), since a task sends one to the driver per batch.
     */
    static final class LatencyHistogram implements Serializable {
        private static final long serialVersionUID = 1L;
        private static final int SUB_BITS = 10;
        private static final int SUB = 1 << SUB_BITS;

        private transient long[] counts = new long[2 * SUB];
        private long count;
        private long max = -1;

        static int index(long v) {
            if (v < 2 * SUB) {
                return (int) v;
            }
            int shift = 63 - Long.numberOfLeadingZeros(v) - SUB_BITS;
            return (int) (shift * SUB + (v >>> shift));
        }

        /** The largest value that falls in bucket INDEX. */
        static long upper(int index) {
            if (index < 2 * SUB) {
                return index;
            }
            int shift = index / SUB - 1;
            long top = index - (long) shift * SUB;
            return ((top + 1) << shift) - 1;
        }

        void add(long value, long n) {
            int i = index(value);
            if (i >= counts.length) {
                counts = Arrays.copyOf(counts, Math.max(i + 1, counts.length * 2));
            }
            counts[i] += n;
            count += n;
            max = Math.max(max, value);
        }

        void merge(LatencyHistogram other) {
            if (other.counts.length > counts.length) {
                counts = Arrays.copyOf(counts, other.counts.length);
            }
            for (int i = 0; i < other.counts.length; i++) {
                counts[i] += other.counts[i];
            }
            count += other.count;
            max = Math.max(max, other.max);
        }

        long count() {
            return count;
        }

        long max() {
            return max;
        }

        /** Nearest rank: the ceil(q * count)-th smallest value (q in (0, 1]). */
        long percentile(double q) {
            long rank = Math.max(1, (long) Math.ceil(q * count));
            long seen = 0;
            for (int i = 0; i < counts.length; i++) {
                seen += counts[i];
                if (seen >= rank) {
                    return Math.min(upper(i), max);
                }
            }
            return max;
        }

        private void writeObject(ObjectOutputStream out) throws IOException {
            out.defaultWriteObject();
            int used = 0;
            for (long c : counts) {
                if (c != 0) {
                    used++;
                }
            }
            out.writeInt(used);
            for (int i = 0; i < counts.length; i++) {
                if (counts[i] != 0) {
                    out.writeInt(i);
                    out.writeLong(counts[i]);
                }
            }
        }

        private void readObject(ObjectInputStream in) throws IOException, ClassNotFoundException {
            in.defaultReadObject();
            counts = new long[2 * SUB];
            int used = in.readInt();
            for (int k = 0; k < used; k++) {
                int i = in.readInt();
                long c = in.readLong();
                if (i < 0) {
                    throw new IOException("bad histogram bucket " + i);
                }
                if (i >= counts.length) {
                    counts = Arrays.copyOf(counts, Math.max(i + 1, counts.length * 2));
                }
                counts[i] = c;
            }
        }
    }

    /* ---- the tasks ---- */

    /** What one task returns to the driver: one Kafka partition of one batch. */
    static final class PartResult implements Serializable {
        private static final long serialVersionUID = 1L;
        final int partition;
        final long records;
        final LatencyHistogram latency;

        PartResult(int partition, long records, LatencyHistogram latency) {
            this.partition = partition;
            this.records = records;
            this.latency = latency;
        }
    }

    /**
     * Runs in a task: writes the records of one offset range to
     * BATCHDIR/part-<kafka partition> and returns the count and the
     * latencies, measured against the wall clock once the file is closed.
     * Timestamps are kept as runs (value, repeats) until then: a partition's
     * records come in timestamp order mostly, many in the same ms.
     */
    static Iterator<PartResult> writePartition(Iterator<ConsumerRecord<byte[], byte[]>> records,
                                               OffsetRange[] ranges, String batchDir)
            throws IOException {
        if (!records.hasNext()) {
            return Collections.emptyIterator();
        }
        OffsetRange range = ranges[TaskContext.get().partitionId()];
        Path file = Paths.get(batchDir, "part-" + range.partition());
        long[] runTs = new long[64];
        long[] runN = new long[64];
        int runs = 0;
        long n = 0;
        StringBuilder line = new StringBuilder(64);
        try (OutputStream w = new BufferedOutputStream(Files.newOutputStream(file), 1 << 16)) {
            while (records.hasNext()) {
                ConsumerRecord<byte[], byte[]> r = records.next();
                long ts = r.timestamp();
                byte[] k = r.key() != null ? r.key() : new byte[0];
                byte[] v = r.value() != null ? r.value() : new byte[0];
                line.setLength(0);
                line.append(r.partition()).append(' ').append(r.offset()).append(' ').append(ts)
                    .append(' ').append(k.length).append(' ').append(v.length).append('\n');
                w.write(line.toString().getBytes(StandardCharsets.US_ASCII));
                w.write(k);
                w.write(v);
                w.write('\n');
                n++;
                if (runs > 0 && runTs[runs - 1] == ts) {
                    runN[runs - 1]++;
                } else {
                    if (runs == runTs.length) {
                        runTs = Arrays.copyOf(runTs, runs * 2);
                        runN = Arrays.copyOf(runN, runs * 2);
                    }
                    runTs[runs] = ts;
                    runN[runs] = 1;
                    runs++;
                }
            }
        }
        long closedMs = System.currentTimeMillis();
        LatencyHistogram latency = new LatencyHistogram();
        for (int i = 0; i < runs; i++) {
            if (runTs[i] >= 0) {
                latency.add(Math.max(0, closedMs - runTs[i]), runN[i]);
            }
        }
        return Collections.singletonList(new PartResult(range.partition(), n, latency)).iterator();
    }

    /* ---- the driver ---- */

    /** JSON lines on the real stdout, one object per line, flushed. */
    private static final class Events {
        private final PrintStream out;

        Events(PrintStream out) {
            this.out = out;
        }

        /** KV: name, value pairs; values are numbers, strings or null. */
        synchronized void emit(Object... kv) {
            StringBuilder b = new StringBuilder("{");
            for (int i = 0; i < kv.length; i += 2) {
                if (i > 0) {
                    b.append(',');
                }
                b.append('"').append(kv[i]).append("\":");
                Object v = kv[i + 1];
                if (v instanceof String) {
                    b.append('"').append(v).append('"');
                } else {
                    b.append(v);
                }
            }
            b.append('}');
            out.println(b);
            out.flush();
        }
    }

    /** What the driver counts; touched by the streaming job thread and main. */
    private static final class Progress {
        final long target;
        long total;
        long batches;
        long firstOutMs = -1;
        long lastOutMs = -1;
        boolean stopping;
        final LatencyHistogram latency = new LatencyHistogram();

        Progress(long target) {
            this.target = target;
        }

        /** Adds one batch's N records and their latencies; returns the total. */
        synchronized long add(List<PartResult> parts, long n, long doneMs) {
            for (PartResult p : parts) {
                latency.merge(p.latency);
            }
            if (n > 0) {
                total += n;
                batches++;
                if (firstOutMs < 0) {
                    firstOutMs = doneMs;
                }
            }
            return total;
        }

        /** True once: for the batch (done at DONEMS) that brought the total to the target. */
        synchronized boolean startStop(long doneMs) {
            if (stopping || total < target) {
                return false;
            }
            stopping = true;
            lastOutMs = doneMs;
            return true;
        }
    }

    /**
     * Halts the JVM with status 1 when Spark waits for Kafka for good (see the
     * header): no return from ssc.start() or no batch generated for LIMITMS,
     * or shutdown hooks still running 15 s after the JVM began to exit.
     */
    private static final class Watchdog implements Runnable {
        private static final long EXIT_LIMIT_MS = 15_000;
        private final long limitMs;
        private final String bootstrap;
        private volatile long lastMs = System.currentTimeMillis();
        private volatile boolean running;
        private volatile boolean disarmed;

        Watchdog(long limitMs, String bootstrap) {
            this.limitMs = limitMs;
            this.bootstrap = bootstrap;
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                Thread t = new Thread(() -> {
                    sleepMs(EXIT_LIMIT_MS);
                    halt("Spark did not stop within " + EXIT_LIMIT_MS + " ms of the exit");
                }, "exit-watchdog");
                t.setDaemon(true);              // does not hold the exit up
                t.start();
            }, "exit-watchdog-hook"));
        }

        /** Starts the watch: ssc.start() is about to be called. */
        void arm() {
            lastMs = System.currentTimeMillis();
            Thread t = new Thread(this, "watchdog");
            t.setDaemon(true);
            t.start();
        }

        /** ssc.start() returned. */
        void started() {
            lastMs = System.currentTimeMillis();
            running = true;
        }

        /** A batch was generated (any thread). */
        void progress() {
            lastMs = System.currentTimeMillis();
        }

        /** The program stops the stream: batches end, the stop has its own limits. */
        void disarm() {
            disarmed = true;
        }

        @Override
        public void run() {
            while (!disarmed) {
                sleepMs(Math.min(1000, limitMs));
                long idle = System.currentTimeMillis() - lastMs;
                if (!disarmed && idle > limitMs) {
                    halt(running
                         ? "no batch generated for " + idle + " ms: the stream's driver consumer"
                           + " is waiting for Kafka at " + bootstrap
                         : "the stream did not start within " + limitMs + " ms: its driver"
                           + " consumer is waiting for Kafka at " + bootstrap);
                }
            }
        }

        private static void sleepMs(long ms) {
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        private static void halt(String why) {
            System.err.println(PROG + ": " + why);
            System.err.flush();
            Runtime.getRuntime().halt(1);
        }
    }

    /**
     * One line: the first line of the exception and of its root cause (a
     * failed Spark job's message goes on with the driver's stack trace).
     */
    private static String reason(Throwable e) {
        Throwable root = e;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        String s = firstLine(e);
        if (root != e) {
            s += " (caused by " + firstLine(root) + ")";
        }
        return s;
    }

    private static String firstLine(Throwable e) {
        String s = e.toString().strip();
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl).strip();
    }

    /** The Q-th percentile (1: the maximum), null when H is empty. */
    private static Long percentile(LatencyHistogram h, double q) {
        if (h.count() == 0) {
            return null;
        }
        return q >= 1 ? h.max() : h.percentile(q);
    }

    public static void main(String[] args) {
        long startedMs = System.currentTimeMillis();
        PrintStream stdout = new PrintStream(new FileOutputStream(FileDescriptor.out), false,
                                             StandardCharsets.UTF_8);
        System.setOut(System.err);                  // stdout is for the JSON lines only

        if (args.length == 1 && (args[0].equals("--help") || args[0].equals("-h"))) {
            stdout.println(USAGE);
            stdout.flush();
            System.exit(0);
        }
        Options opt;
        try {
            opt = Options.parse(args);
        } catch (UsageError e) {
            System.err.println(PROG + ": " + e.getMessage() + " (--help for usage)");
            System.exit(2);
            return;
        }
        Path out = Paths.get(opt.out).toAbsolutePath();
        try {
            Files.createDirectories(out);
        } catch (IOException e) {
            System.err.println(PROG + ": cannot create " + out + ": " + e);
            System.exit(2);
            return;
        }
        System.exit(run(opt, out, startedMs, new Events(stdout)));
    }

    // Spark marks the DStream API deprecated since 3.4 ("Migrate to Structured
    // Streaming"); this program measures the DStream direct stream on purpose.
    @SuppressWarnings("deprecation")
    private static int run(Options opt, Path out, long startedMs, Events events) {
        SparkConf conf = new SparkConf()
            .setAppName("kwal-spark-direct")
            .setMaster(opt.master)
            .set("spark.ui.enabled", "false");
        for (Map.Entry<String, String> e : opt.conf.entrySet()) {
            conf.set(e.getKey(), e.getValue());
        }

        Map<String, Object> kafkaParams = new HashMap<>();
        kafkaParams.put("bootstrap.servers", opt.bootstrap);
        kafkaParams.put("group.id", opt.group);
        kafkaParams.put("key.deserializer", ByteArrayDeserializer.class);
        kafkaParams.put("value.deserializer", ByteArrayDeserializer.class);
        kafkaParams.put("auto.offset.reset", "earliest");
        kafkaParams.put("enable.auto.commit", false);
        kafkaParams.putAll(opt.kafka);

        Progress progress = new Progress(opt.records);
        Watchdog watchdog = new Watchdog(opt.stallTimeoutMs, opt.bootstrap);
        Throwable[] stopError = new Throwable[1];
        Thread[] stopper = new Thread[1];
        JavaStreamingContext ssc;
        try {
            ssc = new JavaStreamingContext(conf, Durations.milliseconds(opt.batchMs));
        } catch (Throwable e) {
            System.err.println(PROG + ": cannot start Spark: " + reason(e));
            return 1;
        }

        JavaInputDStream<ConsumerRecord<byte[], byte[]>> stream = KafkaUtils.createDirectStream(
            ssc,
            LocationStrategies.PreferConsistent(),
            ConsumerStrategies.<byte[], byte[]>Subscribe(Collections.singletonList(opt.topic),
                                                         kafkaParams));

        stream.foreachRDD((rdd, time) -> {
            OffsetRange[] ranges = ((HasOffsetRanges) rdd.rdd()).offsetRanges();
            long offsets = 0;
            for (OffsetRange r : ranges) {
                offsets += r.count();
            }
            if (offsets == 0) {
                return;                             // nothing read: no job, nothing to commit
            }
            long batchMs = time.milliseconds();
            Path dir = out.resolve("batch-" + batchMs);
            Files.createDirectories(dir);
            String batchDir = dir.toString();
            List<PartResult> parts = rdd.mapPartitions(
                records -> writePartition(records, ranges, batchDir)).collect();
            // some time later, after outputs have completed (the guide)
            ((CanCommitOffsets) stream.inputDStream()).commitAsync(ranges);
            long doneMs = System.currentTimeMillis();

            long n = 0;
            for (PartResult p : parts) {
                n += p.records;
            }
            long total = progress.add(parts, n, doneMs);
            if (n > 0) {
                events.emit("event", "batch", "batch_ms", batchMs, "records", n,
                            "total", total, "done_ms", doneMs);
            }
            if (progress.startStop(doneMs)) {
                watchdog.disarm();                  // no more batches from here
                Thread t = new Thread(() -> {
                    try {
                        ssc.stop(true, true);
                    } catch (Throwable e) {
                        stopError[0] = e;
                    }
                }, "stopper");
                synchronized (stopper) {
                    stopper[0] = t;
                }
                t.start();
            }
        });

        ssc.addStreamingListener(new StreamingListener() {
            @Override
            public void onBatchSubmitted(StreamingListenerBatchSubmitted submitted) {
                watchdog.progress();
            }
        });
        watchdog.arm();
        try {
            ssc.start();
        } catch (Throwable e) {
            System.err.println(PROG + ": cannot start the stream: " + reason(e));
            return 1;
        }
        watchdog.started();
        long readyMs = System.currentTimeMillis();
        events.emit("event", "started", "started_ms", startedMs, "ready_ms", readyMs);

        try {
            ssc.awaitTermination();
        } catch (Throwable e) {
            System.err.println(PROG + ": " + reason(e));
            return 1;
        }
        Thread t;
        synchronized (stopper) {
            t = stopper[0];
        }
        if (t == null) {
            System.err.println(PROG + ": the streaming context stopped before " + opt.records
                               + " records");
            return 1;
        }
        try {
            t.join();
        } catch (InterruptedException e) {
            System.err.println(PROG + ": interrupted while stopping");
            return 1;
        }
        if (stopError[0] != null) {
            System.err.println(PROG + ": stopping failed: " + reason(stopError[0]));
            return 1;
        }

        LatencyHistogram h;
        long total;
        long batches;
        long firstOut;
        long lastOut;
        synchronized (progress) {
            h = progress.latency;
            total = progress.total;
            batches = progress.batches;
            firstOut = progress.firstOutMs;
            lastOut = progress.lastOutMs;
        }
        events.emit("event", "done", "records", total, "batches", batches,
                    "started_ms", startedMs, "ready_ms", readyMs,
                    "first_out_ms", firstOut, "last_out_ms", lastOut,
                    "latency_ms_p50", percentile(h, 0.50), "latency_ms_p90", percentile(h, 0.90),
                    "latency_ms_p99", percentile(h, 0.99), "latency_ms_max", percentile(h, 1.0));
        return 0;
    }
}
