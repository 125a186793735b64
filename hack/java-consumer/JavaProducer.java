/*
 * A real Apache RocketMQ 4.9.7 producer for the rebalancer's integration tests: an unmodified
 * DefaultMQProducer sending a steady stream to one topic, so that the tests see what a Java
 * producer does while the operator shrinks the topic (it keeps writing to the queues of the route
 * it last fetched until it refreshes it, every pollNameServerInterval: 30 s by default).
 *
 * Arguments: --namesrv HOST:PORT[;HOST:PORT] --group G --topic T --instance-name NAME
 *   [--rate N (messages per second, default 200)] [--prefix P (bodies are P-SEQ, default the
 *   topic)] [--poll-name-server-interval-ms MS (default: the client's own, 30000)].
 *
 * Messages are sent one at a time with the synchronous send (the client's own queue selection
 * and retries), paced to --rate. stdout carries JSON lines only (every log goes to stderr):
 *   {"event":"started","clientId":"..."} once started;
 *   {"event":"sent","seq":N,"body":"P-N","brokerName":..,"queueId":..,"queueOffset":..,
 *     "msgId":..} for every message the broker stored (SEND_OK);
 *   {"event":"failed","seq":N,"body":"P-N","error":".."} for a send that failed (or returned
 *     another status) after the client's retries: such a message may or may not be stored;
 *   {"event":"stopped","sent":N,"failed":M} after SIGTERM, SIGINT or end of stdin (sending
 *     stops first), before exiting 0.
 *
 * Build: javac -cp "$ROCKETMQ_JAVA_HOME/lib/*" -d target/java-consumer hack/java-consumer/*.java
 * Run:   java -cp "$ROCKETMQ_JAVA_HOME/lib/*:target/java-consumer" JavaProducer ARGS
 */

import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;

public final class JavaProducer {
    private static final String USAGE = "usage: JavaProducer --namesrv HOST:PORT[;HOST:PORT] "
        + "--group G --topic T --instance-name NAME [--rate N (default 200)] [--prefix P] "
        + "[--poll-name-server-interval-ms MS]";

    private static PrintStream out;
    private static final Object EMIT = new Object();
    private static boolean closed;
    private static final AtomicBoolean STOPPING = new AtomicBoolean();
    /** Set by the sending loop once it left. */
    private static final java.util.concurrent.CountDownLatch SENDER_DONE =
        new java.util.concurrent.CountDownLatch(1);
    private static volatile long sent;
    private static volatile long failed;

    static void emit(String line) {
        synchronized (EMIT) {
            if (closed) {
                return;
            }
            out.print(line + "\n");
            out.flush();
            if (out.checkError()) {
                Runtime.getRuntime().halt(0);
            }
            if (line.startsWith("{\"event\":\"stopped\"")) {
                closed = true;
            }
        }
    }

    static void stop(DefaultMQProducer producer, String why) {
        if (!STOPPING.compareAndSet(false, true)) {
            return;
        }
        System.err.println("java-producer: " + why + ": stopping");
        try {
            SENDER_DONE.await(5, java.util.concurrent.TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        Thread shutdown = new Thread(producer::shutdown, "java-producer-shutdown");
        shutdown.setDaemon(true);
        shutdown.start();
        try {
            shutdown.join(3000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        emit("{\"event\":\"stopped\",\"sent\":" + sent + ",\"failed\":" + failed + "}");
        System.err.flush();
        Runtime.getRuntime().halt(0);
    }

    public static void main(String[] argv) throws Exception {
        out = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), false,
            StandardCharsets.UTF_8.name());
        System.setOut(System.err);

        String namesrv = null;
        String group = null;
        String topic = null;
        String instance = null;
        String prefix = null;
        int rate = 200;
        long pollMs = -1;
        try {
            for (int i = 0; i < argv.length; i++) {
                String flag = argv[i];
                if (i + 1 >= argv.length) {
                    throw new IllegalArgumentException(flag + " needs a value");
                }
                String value = argv[++i];
                switch (flag) {
                    case "--namesrv":
                        namesrv = value;
                        break;
                    case "--group":
                        group = value;
                        break;
                    case "--topic":
                        topic = value;
                        break;
                    case "--instance-name":
                        instance = value;
                        break;
                    case "--prefix":
                        prefix = value;
                        break;
                    case "--rate":
                        rate = Integer.parseInt(value);
                        if (rate <= 0) {
                            throw new IllegalArgumentException("--rate must be positive");
                        }
                        break;
                    case "--poll-name-server-interval-ms":
                        pollMs = Long.parseLong(value);
                        if (pollMs <= 0) {
                            throw new IllegalArgumentException(
                                "--poll-name-server-interval-ms must be positive");
                        }
                        break;
                    default:
                        throw new IllegalArgumentException("unknown argument \"" + flag + "\"");
                }
            }
            if (namesrv == null || group == null || topic == null || instance == null) {
                throw new IllegalArgumentException(
                    "--namesrv, --group, --topic and --instance-name are required");
            }
        } catch (IllegalArgumentException e) {
            System.err.println("java-producer: " + e.getMessage() + "\n" + USAGE);
            System.exit(2);
            return;
        }
        if (System.getProperty("rocketmq.client.logUseSlf4j") == null) {
            System.setProperty("rocketmq.client.logUseSlf4j", "true");
        }
        JavaConsumer.quietLogging();
        if (prefix == null) {
            prefix = topic;
        }

        DefaultMQProducer producer = new DefaultMQProducer(group);
        producer.setNamesrvAddr(namesrv);
        producer.setInstanceName(instance);
        if (pollMs > 0) {
            producer.setPollNameServerInterval((int) pollMs);
        }
        Runtime.getRuntime().addShutdownHook(
            new Thread(() -> stop(producer, "SIGTERM or SIGINT"), "java-producer-signal"));
        Thread stdin = new Thread(() -> {
            InputStream in = System.in;
            byte[] buf = new byte[256];
            try {
                while (in.read(buf) >= 0) {
                    // Discard.
                }
            } catch (java.io.IOException e) {
                // As end of stdin.
            }
            stop(producer, "end of stdin");
        }, "java-producer-stdin");
        stdin.setDaemon(true);
        stdin.start();
        try {
            producer.start();
        } catch (Exception e) {
            System.err.println("java-producer: start: " + e);
            System.exit(1);
        }
        String clientId = producer.buildMQClientId();
        emit("{\"event\":\"started\",\"clientId\":" + JavaConsumer.str(clientId) + "}");

        long periodNanos = 1_000_000_000L / rate;
        long next = System.nanoTime();
        long seq = 0;
        try {
            while (!STOPPING.get()) {
                String body = prefix + "-" + seq;
                Message msg = new Message(topic, body.getBytes(StandardCharsets.UTF_8));
                try {
                    SendResult r = producer.send(msg);
                    if (r.getSendStatus() == SendStatus.SEND_OK) {
                        sent++;
                        emit("{\"event\":\"sent\",\"seq\":" + seq + ",\"body\":" + JavaConsumer.str(body)
                            + ",\"brokerName\":" + JavaConsumer.str(r.getMessageQueue().getBrokerName())
                            + ",\"queueId\":" + r.getMessageQueue().getQueueId()
                            + ",\"queueOffset\":" + r.getQueueOffset()
                            + ",\"msgId\":" + JavaConsumer.str(String.valueOf(r.getMsgId())) + "}");
                    } else {
                        failed++;
                        emit("{\"event\":\"failed\",\"seq\":" + seq + ",\"body\":" + JavaConsumer.str(body)
                            + ",\"error\":" + JavaConsumer.str(String.valueOf(r.getSendStatus())) + "}");
                    }
                } catch (Exception e) {
                    failed++;
                    emit("{\"event\":\"failed\",\"seq\":" + seq + ",\"body\":" + JavaConsumer.str(body)
                        + ",\"error\":" + JavaConsumer.str(String.valueOf(e)) + "}");
                }
                seq++;
                next += periodNanos;
                long wait = next - System.nanoTime();
                if (wait > 0) {
                    Thread.sleep(wait / 1_000_000L, (int) (wait % 1_000_000L));
                } else if (wait < -1_000_000_000L) {
                    // More than a second behind (a slow send): do not burst to catch up.
                    next = System.nanoTime();
                }
            }
        } finally {
            SENDER_DONE.countDown();
        }
        Thread.currentThread().join();
    }
}
