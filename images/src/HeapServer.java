// A JVM service with a large heap of live objects: what makes a JVM pod slow to start and
// worth keeping asleep instead. At start it builds an in-memory catalogue (HEAP_MB of entries,
// default 300: a HashMap of String keys to records, as a cache or an index would be), then
// serves HTTP on PORT (default 8080):
//   GET /       -> "entries=N checksum=C count=K\n": K counts the requests served since start,
//                  C is computed over every entry, so a lost or corrupted heap shows.
//   GET /health -> "ok\n"
// The heap is built from a fixed seed: the same HEAP_MB gives the same checksum everywhere.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

public final class HeapServer {
    static final class Entry {
        final long id;
        final String name;
        final long[] history;

        Entry(long id, String name, long[] history) {
            this.id = id;
            this.name = name;
            this.history = history;
        }
    }

    private static final int ENTRY_BYTES = 256; // about: key, record, name, history array

    public static void main(String[] args) throws IOException {
        int heapMb = Integer.parseInt(System.getenv().getOrDefault("HEAP_MB", "300"));
        int port = Integer.parseInt(System.getenv().getOrDefault("PORT", "8080"));
        long started = System.nanoTime();
        int entries = (int) ((long) heapMb * 1024 * 1024 / ENTRY_BYTES);
        Map<String, Entry> catalogue = new HashMap<>(entries * 2);
        long seed = 42;
        for (int i = 0; i < entries; i++) {
            seed = seed * 6364136223846793005L + 1442695040888963407L;
            long[] history = new long[16];
            for (int h = 0; h < history.length; h++) {
                history[h] = seed ^ (h * 0x9E3779B97F4A7C15L);
            }
            catalogue.put("item-" + i, new Entry(i, "name-" + Long.toHexString(seed), history));
        }
        long checksum = 0;
        for (Entry e : catalogue.values()) {
            checksum = checksum * 31 + e.id + e.name.hashCode() + e.history[e.history.length - 1];
        }
        final long sum = checksum;
        final int size = catalogue.size();
        AtomicLong count = new AtomicLong();
        HttpServer server = HttpServer.create(new InetSocketAddress(port), 1024);
        server.createContext("/health", ex -> reply(ex, "ok\n"));
        server.createContext("/", ex -> {
            // Touch the catalogue on every request: the heap is in use, not only kept.
            Entry probe = catalogue.get("item-" + (count.get() % size));
            String body = "entries=" + size + " checksum=" + sum + " count="
                    + count.incrementAndGet() + " probe=" + probe.id + "\n";
            reply(ex, body);
        });
        server.start();
        System.err.printf("heapserver: %d entries (%d MB), checksum %d, listening on %d after %d ms%n",
                size, heapMb, sum, port, (System.nanoTime() - started) / 1_000_000);
    }

    private static void reply(HttpExchange ex, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain");
        ex.sendResponseHeaders(200, bytes.length);
        try (OutputStream out = ex.getResponseBody()) {
            out.write(bytes);
        }
    }
}
