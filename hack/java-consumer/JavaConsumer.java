/*
 * A real Apache RocketMQ 4.9.7 push consumer for the rebalancer's integration tests: the Java
 * twin of hack/rocketmq-consumer (same arguments, same stdout contract).
 *
 * It runs an unmodified DefaultMQPushConsumer (CLUSTERING unless --broadcast,
 * AllocateMessageQueueAveragely, CONSUME_FROM_FIRST_OFFSET), subscribed to every --topic with
 * "*", with client ip --client-ip and instance name --instance-name, so that its client id is
 * IP@NAME.
 *
 * stdout carries JSON lines only (every log goes to stderr):
 *   {"event":"started","clientId":"IP@NAME"} once started;
 *   {"event":"queues","clientId":"...","queues":[{"topic":..,"brokerName":..,"queueId":..}]}
 *     with the queues the client itself holds (its rebalance's process-queue table, without
 *     dropped process queues and without the group's %RETRY% topic), sorted, on start and
 *     whenever the set changes (read every 200 ms);
 *   {"event":"message","topic":..,"brokerName":..,"queueId":..,"queueOffset":..,"body":..} for
 *     every message consumed;
 *   {"event":"stopped"} after SIGTERM, SIGINT or end of stdin, before exiting 0.
 *
 * Build: javac -cp "$ROCKETMQ_JAVA_HOME/lib/*" -d target/java-consumer hack/java-consumer/*.java
 * Run:   java -cp "$ROCKETMQ_JAVA_HOME/lib/*:target/java-consumer" JavaConsumer ARGS
 */

import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.consumer.rebalance.AllocateMessageQueueAveragely;
import org.apache.rocketmq.client.impl.consumer.ProcessQueue;
import org.apache.rocketmq.common.MixAll;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;
import org.apache.rocketmq.common.protocol.heartbeat.MessageModel;

public final class JavaConsumer {
    /** How often the held queues are read from the client, ms. */
    private static final long POLL_MS = 200;
    /** Upper bound of the consumer's own shutdown, ms; the process exits after it either way. */
    private static final long SHUTDOWN_BUDGET_MS = 3000;

    private static final String USAGE = "usage: JavaConsumer --namesrv HOST:PORT[;HOST:PORT] "
        + "--group G --topic T [--topic T2 ...] --client-ip IP --instance-name NAME [--broadcast] "
        + "[--rebalance-interval-ms MS (default 1000)]";

    /** The real stdout: JSON lines only. System.out itself is pointed at stderr. */
    private static PrintStream out;
    private static final Object EMIT = new Object();
    private static boolean closed;
    private static final AtomicBoolean STOPPING = new AtomicBoolean();
    /** Set once the consumer started: a signal before that (or a failed start) just exits. */
    private static volatile boolean started;

    static final class Args {
        String namesrv;
        String group;
        final List<String> topics = new ArrayList<>();
        String clientIp;
        String instanceName;
        boolean broadcast;
        long rebalanceIntervalMs = 1000;
    }

    static Args parse(String[] argv) {
        Args a = new Args();
        for (int i = 0; i < argv.length; i++) {
            String flag = argv[i];
            switch (flag) {
                case "--broadcast":
                    a.broadcast = true;
                    continue;
                case "-h":
                case "--help":
                    throw new IllegalArgumentException(USAGE);
                default:
                    break;
            }
            if (i + 1 >= argv.length) {
                throw new IllegalArgumentException(flag + " needs a value");
            }
            String value = argv[++i];
            switch (flag) {
                case "--namesrv":
                    a.namesrv = value;
                    break;
                case "--group":
                    a.group = value;
                    break;
                case "--topic":
                    a.topics.add(value);
                    break;
                case "--client-ip":
                    a.clientIp = value;
                    break;
                case "--instance-name":
                    a.instanceName = value;
                    break;
                case "--rebalance-interval-ms":
                    long ms;
                    try {
                        ms = Long.parseLong(value);
                    } catch (NumberFormatException e) {
                        ms = 0;
                    }
                    if (ms <= 0) {
                        throw new IllegalArgumentException(
                            "--rebalance-interval-ms: not a positive number: " + value);
                    }
                    a.rebalanceIntervalMs = ms;
                    break;
                default:
                    throw new IllegalArgumentException("unknown argument \"" + flag + "\"");
            }
        }
        need(a.namesrv, "--namesrv");
        need(a.group, "--group");
        need(a.clientIp, "--client-ip");
        need(a.instanceName, "--instance-name");
        if (a.topics.isEmpty()) {
            throw new IllegalArgumentException("at least one --topic is required");
        }
        if (a.instanceName.equals("DEFAULT")) {
            // The client replaces the instance name "DEFAULT" with its PID in clustering mode.
            throw new IllegalArgumentException(
                "--instance-name DEFAULT would be replaced by the client");
        }
        return a;
    }

    private static void need(String value, String name) {
        if (value == null) {
            throw new IllegalArgumentException(name + " is required");
        }
    }

    /** A JSON string literal. */
    static String str(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"':
                    b.append("\\\"");
                    break;
                case '\\':
                    b.append("\\\\");
                    break;
                case '\n':
                    b.append("\\n");
                    break;
                case '\r':
                    b.append("\\r");
                    break;
                case '\t':
                    b.append("\\t");
                    break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }

    /**
     * Writes one JSON line to stdout and flushes it. A closed stdout ends the process: nobody is
     * listening any more. Nothing is written after "stopped".
     */
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

    /** A held queue; sorted by topic, broker name, queue id (as the Rust consumer's tuples). */
    static final class Queue implements Comparable<Queue> {
        final String topic;
        final String brokerName;
        final int queueId;

        Queue(MessageQueue mq) {
            this.topic = mq.getTopic();
            this.brokerName = mq.getBrokerName();
            this.queueId = mq.getQueueId();
        }

        @Override
        public int compareTo(Queue o) {
            int c = topic.compareTo(o.topic);
            if (c == 0) {
                c = brokerName.compareTo(o.brokerName);
            }
            return c != 0 ? c : Integer.compare(queueId, o.queueId);
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Queue && compareTo((Queue) o) == 0;
        }

        @Override
        public int hashCode() {
            return Objects.hash(topic, brokerName, queueId);
        }

        String json() {
            return "{\"topic\":" + str(topic) + ",\"brokerName\":" + str(brokerName)
                + ",\"queueId\":" + queueId + "}";
        }
    }

    /** The queues the client holds: its process-queue table without dropped ones or %RETRY%. */
    @SuppressWarnings("deprecation") // getDefaultMQPushConsumerImpl: the way to the table in 4.9.7
    static TreeSet<Queue> held(DefaultMQPushConsumer consumer) {
        TreeSet<Queue> queues = new TreeSet<>();
        Map<MessageQueue, ProcessQueue> table =
            consumer.getDefaultMQPushConsumerImpl().getRebalanceImpl().getProcessQueueTable();
        for (Map.Entry<MessageQueue, ProcessQueue> e : table.entrySet()) {
            if (e.getKey().getTopic().startsWith(MixAll.RETRY_GROUP_TOPIC_PREFIX)
                || e.getValue().isDropped()) {
                continue;
            }
            queues.add(new Queue(e.getKey()));
        }
        return queues;
    }

    static String queuesEvent(String clientId, TreeSet<Queue> queues) {
        StringBuilder b = new StringBuilder("{\"event\":\"queues\",\"clientId\":")
            .append(str(clientId)).append(",\"queues\":[");
        String sep = "";
        for (Queue q : queues) {
            b.append(sep).append(q.json());
            sep = ",";
        }
        return b.append("]}").toString();
    }

    /** Shuts the consumer down (time-boxed), prints "stopped" and halts with status 0. */
    static void stop(DefaultMQPushConsumer consumer, String why) {
        if (!STOPPING.compareAndSet(false, true)) {
            return;
        }
        System.err.println("java-consumer: " + why + ": shutting down");
        Thread shutdown = new Thread(consumer::shutdown, "java-consumer-shutdown");
        shutdown.setDaemon(true);
        shutdown.start();
        try {
            shutdown.join(SHUTDOWN_BUDGET_MS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (shutdown.isAlive()) {
            System.err.println("java-consumer: shutdown took over " + SHUTDOWN_BUDGET_MS
                + " ms; exiting anyway");
        }
        emit("{\"event\":\"stopped\"}");
        System.err.flush();
        // halt: also from the shutdown hook (SIGTERM), where exit would wait for this hook, and
        // the status would be 143.
        Runtime.getRuntime().halt(0);
    }

    /** Quiet the JVM-wide logging (logback's default is DEBUG): INFO, on stderr. */
    static void quietLogging() {
        org.slf4j.Logger root = org.slf4j.LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
        if (root instanceof ch.qos.logback.classic.Logger) {
            ((ch.qos.logback.classic.Logger) root).setLevel(ch.qos.logback.classic.Level.INFO);
        }
    }

    public static void main(String[] argv) throws Exception {
        // Whatever a library prints to System.out (logback's default console appender) goes to
        // stderr; the JSON lines use the real stdout.
        out = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), false,
            StandardCharsets.UTF_8.name());
        System.setOut(System.err);

        Args args;
        try {
            args = parse(argv);
        } catch (IllegalArgumentException e) {
            System.err.println("java-consumer: " + e.getMessage() + "\n" + USAGE);
            System.exit(2);
            return;
        }
        // Read by the client when its classes load, so set before any of them does.
        // RebalanceService sleeps this long between rebalances (default 20000), and is woken
        // early when the broker notifies that the group's consumers changed.
        System.setProperty("rocketmq.client.rebalance.waitInterval",
            Long.toString(args.rebalanceIntervalMs));
        // The client's logs through slf4j (logback, stderr) instead of files under user.home.
        if (System.getProperty("rocketmq.client.logUseSlf4j") == null) {
            System.setProperty("rocketmq.client.logUseSlf4j", "true");
        }
        quietLogging();

        DefaultMQPushConsumer consumer = new DefaultMQPushConsumer(args.group);
        consumer.setNamesrvAddr(args.namesrv);
        consumer.setClientIP(args.clientIp);
        consumer.setInstanceName(args.instanceName);
        consumer.setMessageModel(args.broadcast ? MessageModel.BROADCASTING : MessageModel.CLUSTERING);
        consumer.setAllocateMessageQueueStrategy(new AllocateMessageQueueAveragely());
        consumer.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        for (String topic : args.topics) {
            consumer.subscribe(topic, "*");
        }
        consumer.registerMessageListener((MessageListenerConcurrently) (msgs, context) -> {
            for (MessageExt m : msgs) {
                byte[] body = m.getBody() == null ? new byte[0] : m.getBody();
                emit("{\"event\":\"message\",\"topic\":" + str(m.getTopic())
                    + ",\"brokerName\":" + str(String.valueOf(m.getBrokerName()))
                    + ",\"queueId\":" + m.getQueueId()
                    + ",\"queueOffset\":" + m.getQueueOffset()
                    + ",\"body\":" + str(new String(body, StandardCharsets.UTF_8)) + "}");
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });

        // SIGTERM and SIGINT run the shutdown hooks; end of stdin means the parent is gone.
        Runtime.getRuntime().addShutdownHook(
            new Thread(() -> {
                if (started) {
                    stop(consumer, "SIGTERM or SIGINT");
                }
            }, "java-consumer-signal"));
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
            stop(consumer, "end of stdin");
        }, "java-consumer-stdin");
        stdin.setDaemon(true);
        stdin.start();

        try {
            consumer.start();
        } catch (Exception e) {
            System.err.println("java-consumer: start: " + e);
            e.printStackTrace();
            System.exit(1);
        }
        started = true;
        String clientId = consumer.buildMQClientId();
        System.err.println("java-consumer: started " + clientId + " in group " + args.group);
        emit("{\"event\":\"started\",\"clientId\":" + str(clientId) + "}");

        TreeSet<Queue> last = null;
        while (!STOPPING.get()) {
            try {
                TreeSet<Queue> queues = held(consumer);
                if (!queues.equals(last)) {
                    emit(queuesEvent(clientId, queues));
                    last = queues;
                }
            } catch (RuntimeException e) {
                System.err.println("java-consumer: reading the process-queue table: " + e);
            }
            Thread.sleep(POLL_MS);
        }
        // The stopping thread halts the process.
        Thread.currentThread().join();
    }
}
