// Workload J for Apache Flink (BENCHMARKS.md, "Joins"): the DataStream interval join of two
// generated streams, the same data as benches/join.yaml.
//
//   left  i = 0 .. N-1: key = i % K, ts = i ms
//   right j = 0 .. N-1: key = j % K, ts = j + 500 ms
//   left.keyBy(key).intervalJoin(right.keyBy(key)).between(0 ms, 1000 ms) → (key, left ts, right ts)
//   → a sink that counts (and sums the keys, to check).
//
// Each stream is env.fromSequence(0, N-1), remapped so that source split s of P emits
// s, s+P, s+2P, ... (event time advances evenly in every split, as with Rill's generator) —
// the remapping of ../shared/peers/flink/FlinkPeerBench.java. Watermarks: monotonous
// timestamps. Compiled with plain javac against the jars ../shared/peers/flink/run.sh installs:
//
//   benches/join.sh runs it; by hand:
//   javac -d /tmp/fj -cp "$LIB/*" benches/flink/FlinkJoinBench.java
//   java -cp "$LIB/*:/tmp/fj" FlinkJoinBench --n 5000000 --keys 100000 --p 1
//
// Prints one line: flink J p=P N=N keys=K secs=... net_secs=... pairs=... check=ok|FAILED

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.accumulators.LongCounter;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.JobManagerOptions;
import org.apache.flink.configuration.RestOptions;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.co.ProcessJoinFunction;
import org.apache.flink.streaming.api.functions.sink.legacy.RichSinkFunction;
import org.apache.flink.util.Collector;
import org.apache.flink.util.NumberSequenceIterator;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

public class FlinkJoinBench {

    /** One generated event: its key and event time (ms). */
    public static class Event {
        public long key;
        public long ts;

        public Event() {}

        public Event(long key, long ts) {
            this.key = key;
            this.ts = ts;
        }
    }

    /** A joined pair. */
    public static class Pair {
        public long key;
        public long leftTs;
        public long rightTs;

        public Pair() {}
    }

    /** Index → event, with split s emitting s, s+P, s+2P, ... (see the file comment). */
    public static class Generate implements MapFunction<Long, Event> {
        private final long[] splitStarts;
        private final long keys;
        private final long offset;

        Generate(long[] splitStarts, long keys, long offset) {
            this.splitStarts = splitStarts;
            this.keys = keys;
            this.offset = offset;
        }

        @Override
        public Event map(Long index) {
            long idx = index;
            long i = idx;
            if (splitStarts != null) {
                int s = splitStarts.length - 1;
                while (idx < splitStarts[s]) {
                    s--;
                }
                i = (idx - splitStarts[s]) * splitStarts.length + s;
            }
            return new Event(i % keys, i + offset);
        }
    }

    public static class KeyOf implements KeySelector<Event, Long> {
        @Override
        public Long getKey(Event e) {
            return e.key;
        }
    }

    public static class Join extends ProcessJoinFunction<Event, Event, Pair> {
        @Override
        public void processElement(Event left, Event right, Context ctx, Collector<Pair> out) {
            Pair p = new Pair();
            p.key = left.key;
            p.leftTs = left.ts;
            p.rightTs = right.ts;
            out.collect(p);
        }
    }

    public static class CountingSink extends RichSinkFunction<Pair> {
        private long pairs;
        private long keySum;

        @Override
        public void open(OpenContext ctx) {
            pairs = 0;
            keySum = 0;
        }

        @Override
        public void invoke(Pair p, Context context) {
            pairs++;
            keySum += p.key;
        }

        @Override
        public void close() {
            LongCounter c = new LongCounter();
            c.add(pairs);
            getRuntimeContext().addAccumulator("pairs", c);
            LongCounter k = new LongCounter();
            k.add(keySum);
            getRuntimeContext().addAccumulator("key_sum", k);
        }
    }

    private static long[] splitStarts(long n, int p) {
        if (p <= 1) {
            return null;
        }
        NumberSequenceIterator[] its = new NumberSequenceIterator(0, n - 1).split(p);
        long[] starts = new long[its.length];
        for (int s = 0; s < its.length; s++) {
            starts[s] = its[s].getCurrent();
        }
        return starts;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            a.put(args[i].replaceFirst("^--", ""), args[i + 1]);
        }
        long n = Long.parseLong(a.getOrDefault("n", "5000000"));
        long keys = Long.parseLong(a.getOrDefault("keys", "100000"));
        int p = Integer.parseInt(a.getOrDefault("p", "1"));

        Configuration conf = new Configuration();
        conf.set(RestOptions.BIND_ADDRESS, "127.0.0.1");
        conf.set(RestOptions.ADDRESS, "127.0.0.1");
        conf.set(RestOptions.BIND_PORT, "0");
        conf.set(JobManagerOptions.ADDRESS, "127.0.0.1");
        conf.set(JobManagerOptions.BIND_HOST, "127.0.0.1");
        conf.set(TaskManagerOptions.HOST, "127.0.0.1");
        conf.set(TaskManagerOptions.BIND_HOST, "127.0.0.1");
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(p, conf);
        env.setParallelism(p);

        long[] starts = splitStarts(n, p);
        WatermarkStrategy<Event> wm = WatermarkStrategy.<Event>forMonotonousTimestamps().withTimestampAssigner((e, t) -> e.ts);
        DataStream<Event> left = env.fromSequence(0, n - 1).name("left").map(new Generate(starts, keys, 0)).assignTimestampsAndWatermarks(wm);
        DataStream<Event> right = env.fromSequence(0, n - 1).name("right").map(new Generate(starts, keys, 500)).assignTimestampsAndWatermarks(wm);
        left.keyBy(new KeyOf())
                .intervalJoin(right.keyBy(new KeyOf()))
                .between(Duration.ofMillis(0), Duration.ofMillis(1000))
                .process(new Join())
                .name("interval join")
                .addSink(new CountingSink()).name("count");

        long t0 = System.nanoTime();
        JobExecutionResult res = env.execute("flink J p=" + p + " N=" + n);
        double secs = (System.nanoTime() - t0) / 1e9;
        long pairs = ((Number) res.getAllAccumulatorResults().get("pairs")).longValue();
        long keySum = ((Number) res.getAllAccumulatorResults().get("key_sum")).longValue();
        long wantKeySum = 0;
        for (long i = 0; i < n; i++) {
            wantKeySum += i % keys;
        }
        boolean ok = pairs == n && keySum == wantKeySum;
        System.out.printf("flink J p=%d N=%d keys=%d secs=%.3f net_secs=%.3f pairs=%d check=%s%n",
                p, n, keys, secs, res.getNetRuntime() / 1000.0, pairs, ok ? "ok" : "FAILED");
    }
}
