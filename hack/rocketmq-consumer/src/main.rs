//! A real RocketMQ push consumer for the rebalancer's integration tests.
//!
//! It runs an unmodified `DefaultMQPushConsumer` of the crates.io crate `rocketmq-client-rust`
//! (clustering mode unless `--broadcast`, `AllocateMessageQueueAveragely`, consume from the first
//! offset), subscribed to every `--topic` with `*`, with client ip `--client-ip` and instance name
//! `--instance-name`, so that its client id is `IP@NAME`.
//!
//! stdout carries JSON lines only (logs go to stderr):
//!
//! * `{"event":"started","clientId":"IP@NAME"}` once started;
//! * `{"event":"queues","clientId":"...","queues":[{"topic":..,"brokerName":..,"queueId":..}]}`
//!   with the queues the client itself holds (its process-queue table, as in
//!   `consumer_running_info()`), sorted, on start and whenever the set changes;
//! * `{"event":"message","topic":..,"brokerName":..,"queueId":..,"queueOffset":..,"body":..}` for
//!   every message consumed;
//! * `{"event":"stopped"}` after SIGTERM, SIGINT or end of stdin, before exiting 0.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rocketmq_client_rust::{
    ClientConfig, ClientRuntime, ClientRuntimeConfig, ConsumeConcurrentlyContext,
    ConsumeConcurrentlyStatus, DefaultMQPushConsumer, MQPushConsumer, MessageListenerConcurrently,
    TelemetryHandle,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_protocol::protocol::heartbeat::message_model::MessageModel;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use serde_json::json;

/// How often the held queues are read from the client.
const POLL: Duration = Duration::from_millis(200);
/// Upper bound of the consumer's own shutdown; the process exits after it either way.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3);

const USAGE: &str = "usage: rocketmq-consumer --namesrv HOST:PORT[;HOST:PORT] --group G --topic T \
                     [--topic T2 ...] --client-ip IP --instance-name NAME [--broadcast] \
                     [--rebalance-interval-ms MS (default 1000)]";

#[derive(Debug)]
struct Args {
    namesrv: String,
    group: String,
    topics: Vec<String>,
    client_ip: String,
    instance_name: String,
    broadcast: bool,
    rebalance_interval_ms: u64,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut namesrv, mut group, mut client_ip, mut instance_name) = (None, None, None, None);
    let mut topics = Vec::new();
    let mut broadcast = false;
    let mut rebalance_interval_ms = 1000;
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--namesrv" => namesrv = Some(value()?),
            "--group" => group = Some(value()?),
            "--topic" => topics.push(value()?),
            "--client-ip" => client_ip = Some(value()?),
            "--instance-name" => instance_name = Some(value()?),
            "--broadcast" => broadcast = true,
            "--rebalance-interval-ms" => {
                let v = value()?;
                rebalance_interval_ms =
                    v.parse::<u64>().ok().filter(|ms| *ms > 0).ok_or_else(|| {
                        format!("--rebalance-interval-ms: not a positive number: {v}")
                    })?;
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let need = |v: Option<String>, name: &str| v.ok_or_else(|| format!("{name} is required"));
    let args = Args {
        namesrv: need(namesrv, "--namesrv")?,
        group: need(group, "--group")?,
        topics,
        client_ip: need(client_ip, "--client-ip")?,
        instance_name: need(instance_name, "--instance-name")?,
        broadcast,
        rebalance_interval_ms,
    };
    if args.topics.is_empty() {
        return Err("at least one --topic is required".to_string());
    }
    if args.instance_name == "DEFAULT" {
        // The client replaces the instance name "DEFAULT" with `PID#nanos` in clustering mode.
        return Err("--instance-name DEFAULT would be replaced by the client".to_string());
    }
    Ok(args)
}

/// Writes one JSON line to stdout and flushes it. A closed stdout ends the process: nobody is
/// listening any more.
fn emit(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{value}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

struct Listener;

impl MessageListenerConcurrently for Listener {
    fn consume_message(
        &self,
        msgs: &[&MessageExt],
        _context: &ConsumeConcurrentlyContext,
    ) -> rocketmq_client_rust::ClientResult<ConsumeConcurrentlyStatus> {
        for msg in msgs {
            let body = msg.body().unwrap_or_default();
            emit(json!({
                "event": "message",
                "topic": msg.topic().as_str(),
                "brokerName": msg.broker_name(),
                "queueId": msg.queue_id(),
                "queueOffset": msg.queue_offset(),
                "body": String::from_utf8_lossy(&body),
            }));
        }
        Ok(ConsumeConcurrentlyStatus::ConsumeSuccess)
    }
}

type Queue = (String, String, i32);

/// The queues the client holds: its process-queue table (`consumerStatus`'s mq table), without
/// queues already dropped by a rebalance.
async fn held_queues(consumer: &DefaultMQPushConsumer) -> Result<BTreeSet<Queue>, String> {
    let info = consumer
        .consumer_running_info()
        .await
        .map_err(|e| e.to_string())?;
    Ok(info
        .mq_table
        .iter()
        .filter(|(_, pq)| !pq.droped)
        .map(|(mq, _)| {
            (
                mq.topic_str().to_string(),
                mq.broker_name().to_string(),
                mq.queue_id(),
            )
        })
        .collect())
}

fn queues_event(client_id: &str, queues: &BTreeSet<Queue>) -> serde_json::Value {
    let queues: Vec<_> = queues
        .iter()
        .map(|(topic, broker, id)| json!({"topic": topic, "brokerName": broker, "queueId": id}))
        .collect();
    json!({"event": "queues", "clientId": client_id, "queues": queues})
}

/// Resolves on SIGTERM, SIGINT (handlers installed by [`Stop::install`], before the consumer
/// starts) or end of stdin (the parent closed the pipe or died).
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn install() -> Result<Stop, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind| signal(kind).map_err(|e| format!("signal handler: {e}"));
        Ok(Stop {
            term: handler(SignalKind::terminate())?,
            int: handler(SignalKind::interrupt())?,
        })
    }

    async fn requested(mut self) -> &'static str {
        use tokio::io::AsyncReadExt;
        let stdin_eof = async {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 256];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            () = stdin_eof => "end of stdin",
        }
    }
}

/// Runs the consumer until asked to stop; then shuts it down (time-boxed), prints `stopped` and
/// exits 0 without tearing anything else down. Returns only on failure.
async fn run(
    args: Args,
    client_runtime: Arc<ClientRuntime>,
) -> Result<std::convert::Infallible, String> {
    let stop = Stop::install()?;
    let mut config = ClientConfig::new();
    config.set_namesrv_addr(args.namesrv.clone().into());
    config.set_client_ip(args.client_ip.clone().into());
    config.set_instance_name(args.instance_name.clone().into());
    let client_id = config.build_mq_client_id();

    let mut consumer = DefaultMQPushConsumer::builder(client_runtime)
        .client_config(config)
        .consumer_group(args.group.clone())
        .message_model(if args.broadcast {
            MessageModel::Broadcasting
        } else {
            MessageModel::Clustering
        })
        .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
        .build();
    for topic in &args.topics {
        consumer
            .subscribe(topic.as_str(), "*")
            .await
            .map_err(|e| format!("subscribe {topic}: {e}"))?;
    }
    consumer.register_message_listener_concurrently(Listener);
    consumer.start().await.map_err(|e| format!("start: {e}"))?;
    eprintln!(
        "rocketmq-consumer: started {client_id} in group {}",
        args.group
    );
    emit(json!({"event": "started", "clientId": client_id}));

    let stop = stop.requested();
    tokio::pin!(stop);
    let mut last: Option<BTreeSet<Queue>> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            why = &mut stop => break why,
            _ = tick.tick() => {}
        }
        match held_queues(&consumer).await {
            Ok(queues) if last.as_ref() != Some(&queues) => {
                emit(queues_event(&client_id, &queues));
                last = Some(queues);
            }
            Ok(_) => {}
            Err(e) => eprintln!("rocketmq-consumer: consumer_running_info: {e}"),
        }
    };
    eprintln!("rocketmq-consumer: {why}: shutting down");
    if tokio::time::timeout(SHUTDOWN_BUDGET, consumer.shutdown())
        .await
        .is_err()
    {
        eprintln!("rocketmq-consumer: shutdown took over {SHUTDOWN_BUDGET:?}; exiting anyway");
    }
    emit(json!({"event": "stopped"}));
    // Exit without tearing the runtime down: that waits on the client's tasks, which the
    // time-boxed shutdown above may have left running.
    let _ = std::io::stderr().flush();
    std::process::exit(0);
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rocketmq-consumer: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    init_logging();
    // The client reads its rebalance period from these (Java: system properties) when its
    // client instance is created. Set here, before any thread exists.
    std::env::set_var(
        "rocketmq.client.rebalance.waitInterval",
        args.rebalance_interval_ms.to_string(),
    );
    std::env::set_var(
        "rocketmq.client.rebalance.minInterval",
        args.rebalance_interval_ms.min(1000).to_string(),
    );

    let owner = match RuntimeOwner::plan(RuntimeConfig {
        thread_name: "rocketmq-consumer".to_string(),
        ..Default::default()
    })
    .map_err(|e| e.to_string())
    .and_then(|plan| plan.build().map_err(|e| e.to_string()))
    {
        Ok(owner) => owner,
        Err(e) => {
            eprintln!("rocketmq-consumer: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client_runtime = match ClientRuntime::try_new(
        owner.root_context().component("client"),
        ClientRuntimeConfig::default(),
        TelemetryHandle::noop(),
    ) {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rocketmq-consumer: client runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Err(error) = owner.block_on(run(args, client_runtime));
    eprintln!("rocketmq-consumer: {error}");
    ExitCode::FAILURE
}

/// Logs of the client to stderr, filtered by `RUST_LOG` (default: warnings, and the client's
/// "rebalance changed" and broker-notification messages).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,rocketmq_client_rust::implementation::client_remoting_processor=info,\
             rocketmq_client_rust::consumer::consumer_impl::re_balance::rebalance_push_impl=info",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter)
        .try_init();
}
