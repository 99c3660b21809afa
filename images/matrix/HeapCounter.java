// A JVM program whose state lives in the heap: WORKERS named threads ("worker-<k>") insert keys
// 0, 1, 2, ... into one shared map, key i holding mix(i), and count their own inserts. mix is
// called often enough to be JIT-compiled (run with -XX:CompileCommand=PrintCompilation,
// HeapCounter::mix to see when). Every 250 ms the main thread prints
//     jvm size=<n> sum=<sum of the map's values> workers=<each worker's count, comma-separated>
//         cpus=<availableProcessors() now> gc=<the collectors the JVM chose at its start>
// summing the map afresh, so the line shows the map's contents, not a counter beside it:
// a test recomputes sum from size, and the worker counts add up to size.
import java.lang.management.ManagementFactory;
import java.util.HashMap;
import java.util.Map;
import java.util.stream.Collectors;

public class HeapCounter {
    static final int WORKERS = Integer.parseInt(System.getenv().getOrDefault("WORKERS", "4"));
    static final Map<Long, Long> map = new HashMap<>();
    static final long[] counts = new long[WORKERS];  // guarded by map, like the map itself

    // Fibonacci hashing, the top 24 bits; the test computes the same with Python integers.
    static long mix(long i) {
        return (i * 0x9E3779B97F4A7C15L) >>> 40;
    }

    static void work(int k) {
        long spin = 0;
        while (true) {
            for (int j = 0; j < 20_000; j++) {  // makes mix hot, for the JIT to compile it
                spin += mix(j);
            }
            synchronized (map) {
                long key = map.size();
                map.put(key, mix(key));
                counts[k]++;
            }
            try {
                Thread.sleep(50 + 10 * k);
            } catch (InterruptedException e) {
                return;
            }
            if (spin == 42) {  // uses spin, so that the JIT cannot drop the loop
                System.out.println("unlikely");
            }
        }
    }

    public static void main(String[] args) throws InterruptedException {
        String gc = ManagementFactory.getGarbageCollectorMXBeans().stream()
                .map(bean -> bean.getName().replace(' ', '_')).collect(Collectors.joining(","));
        for (int k = 0; k < WORKERS; k++) {
            final int id = k;
            Thread t = new Thread(() -> work(id), "worker-" + k);
            t.setDaemon(true);
            t.start();
        }
        while (true) {
            long size, sum = 0;
            StringBuilder each = new StringBuilder();
            synchronized (map) {
                size = map.size();
                for (long v : map.values()) {
                    sum += v;
                }
                for (int k = 0; k < WORKERS; k++) {
                    each.append(k == 0 ? "" : ",").append(counts[k]);
                }
            }
            System.out.println("jvm size=" + size + " sum=" + sum + " workers=" + each
                               + " cpus=" + Runtime.getRuntime().availableProcessors() + " gc=" + gc);
            Thread.sleep(250);
        }
    }
}
