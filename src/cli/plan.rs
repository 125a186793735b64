//! `rebalancer plan`: the operator's computation, offline.

use std::fmt::Write as _;

use kube::ResourceExt;

use super::load::{Loaded, load_files};
use super::route::{RouteArg, parse_route_arg, read_routes, topic_of_route};
use crate::api::{Allocation, ConsumerGroup, Topic};
use crate::assign::ConsumerInput;
use crate::plan::{Plan, PlanWarning, idle_summary, plan_group_with_warnings};

/// Output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned, human-readable table.
    Table,
    /// The status fields as YAML.
    Yaml,
    /// The status fields as JSON (exactly what the operator writes).
    Json,
}

/// Arguments of `rebalancer plan`.
#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// YAML file(s) with Topic and ConsumerGroup objects; `-` reads stdin. Other kinds are skipped,
    /// except an unknown kind of rebalancer.dev (a typo), which is an error.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<String>,
    /// The ConsumerGroup to plan (needed when the files hold several).
    #[arg(long)]
    pub group: Option<String>,
    /// Consumers as `ID[=ZONE]`, comma separated or repeated: pod names, or RocketMQ client ids
    /// (`clientIP@instanceName`, e.g. `10.244.1.7@12345#1717`). They are sorted in Java
    /// `String.compareTo` order, as RocketMQ clients sort them.
    #[arg(long, value_delimiter = ',', conflicts_with = "replicas")]
    pub consumers: Vec<String>,
    /// N consumers named `<group>-0 .. <group>-N-1`, as a StatefulSet names its pods.
    #[arg(long)]
    pub replicas: Option<u32>,
    /// `TOPIC=FILE`: the route of TOPIC (a topic of the group's spec.topics), as
    /// `mqadmin topicRoute -t NAME` prints it (JSON, or the same in YAML); `-` reads stdin. It
    /// stands in for the Topic named TOPIC. Repeatable.
    #[arg(long = "route", value_name = "TOPIC=FILE", value_parser = parse_route_arg)]
    pub routes: Vec<RouteArg>,
    /// Previous assignment: `plan -o json|yaml` output, or a ConsumerGroup with a status.
    #[arg(long)]
    pub previous: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Runs `plan` and prints the result.
pub fn run(args: &PlanArgs) -> Result<(), String> {
    let stdin_readers = args.files.iter().filter(|f| *f == "-").count()
        + args.routes.iter().filter(|r| r.file == "-").count();
    if stdin_readers > 1 {
        return Err("stdin (-) can be read once: give it to one -f or one --route".into());
    }
    let mut loaded = load_files(&args.files).map_err(|e| e.to_string())?;
    let (file, group) = pick_group(&loaded, args.group.as_deref())?;
    let group = group.clone();
    let file = file.to_string();
    let namespace = group.namespace();
    // A route stands in for the Topic of its name (the group's namespace), replacing any Topic of
    // that name in the files.
    for arg in &args.routes {
        if !group.spec.topics.contains(&arg.topic) {
            return Err(format!(
                "--route {}={}: ConsumerGroup {} does not subscribe topic {} (spec.topics: {})",
                arg.topic,
                arg.file,
                group.name_any(),
                arg.topic,
                group.spec.topics.join(", ")
            ));
        }
    }
    let routes = read_routes(&args.routes)?;
    for (arg, route) in &routes {
        let same = |t: &Topic| t.name_any() == arg.topic && t.namespace() == namespace;
        let base = loaded.topics.iter().find(|(_, t)| same(t)).map(|(_, t)| t);
        let topic = topic_of_route(&arg.topic, namespace.as_deref(), route, base);
        if let Some(v) = crate::api::validation::validate_topic(&topic.spec).first() {
            // `spec.brokers[i]` of a route topic is its i-th broker in name order.
            let field = match v.field.strip_prefix("spec.brokers[") {
                Some(rest) => {
                    let (i, tail) = rest.split_once(']').unwrap_or((rest, ""));
                    let broker = i
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| topic.spec.brokers().get(i))
                        .map_or("?", |b| b.name.as_str());
                    format!("queueDatas (brokerName {broker}){tail}")
                }
                None => v.field.clone(),
            };
            return Err(format!(
                "{}: route of topic {}: {field}: {}",
                arg.file, arg.topic, v.message
            ));
        }
        loaded.topics.retain(|(_, t)| !same(t));
        loaded.topics.push((arg.file.clone(), topic));
    }
    let group = &group;
    let file = file.as_str();
    let consumers = consumers(args, &group.name_any())?;
    let previous = match &args.previous {
        Some(path) => Some(read_previous(path)?),
        None => None,
    };
    // A topic with the file it came from.
    let find = |name: &str| -> Option<&(String, Topic)> {
        loaded
            .topics
            .iter()
            .find(|(_, t)| t.name_any() == name && t.namespace() == namespace)
    };
    // Report a broken Topic against its own file, before the group is planned.
    for name in &group.spec.topics {
        if let Some((topic_file, topic)) = find(name)
            && let Some(v) = crate::api::validation::validate_topic(&topic.spec).first()
        {
            return Err(format!("{topic_file}: Topic {name}: {v}"));
        }
    }
    let lookup = |name: &str| find(name).map(|(_, t)| t);
    let plan = plan_group_with_warnings(&group.spec, false, lookup, &consumers, previous.as_ref())
        .map_err(|e| format!("{file}: ConsumerGroup {}: {e}", group.name_any()))?;
    let text = match args.output {
        Output::Json => {
            serde_json::to_string_pretty(&plan.allocation).map_err(|e| e.to_string())? + "\n"
        }
        Output::Yaml => serde_yaml::to_string(&plan.allocation).map_err(|e| e.to_string())?,
        Output::Table => table(group, &plan),
    };
    print!("{text}");
    Ok(())
}

fn pick_group<'a>(
    loaded: &'a Loaded,
    wanted: Option<&str>,
) -> Result<(&'a str, &'a ConsumerGroup), String> {
    let names = || {
        loaded
            .groups
            .iter()
            .map(|(_, g)| g.name_any())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(name) => loaded
            .groups
            .iter()
            .find(|(_, g)| g.name_any() == name)
            .map(|(f, g)| (f.as_str(), g))
            .ok_or_else(|| format!("--group {name}: no such ConsumerGroup (found: {})", names())),
        None => match loaded.groups.as_slice() {
            [] => Err("no ConsumerGroup in the input files".into()),
            [(f, g)] => Ok((f.as_str(), g)),
            _ => Err(format!(
                "several ConsumerGroups ({}): choose one with --group",
                names()
            )),
        },
    }
}

fn consumers(args: &PlanArgs, group: &str) -> Result<Vec<ConsumerInput>, String> {
    if let Some(n) = args.replicas {
        let limit = crate::assign::limits::MAX_CONSUMERS;
        if n as usize > limit {
            return Err(format!(
                "--replicas {n}: more than the {limit} consumers a group may have"
            ));
        }
        return Ok((0..n)
            .map(|i| ConsumerInput::new(format!("{group}-{i}")))
            .collect());
    }
    if args.consumers.is_empty() {
        return Err("no consumers: give --consumers ID[=ZONE],... or --replicas N".into());
    }
    args.consumers
        .iter()
        .map(|c| {
            let (id, zone) = match c.split_once('=') {
                Some((id, zone)) => (id.trim(), Some(zone.trim().to_string())),
                None => (c.trim(), None),
            };
            if id.is_empty() {
                return Err(format!("--consumers {c:?}: empty consumer id"));
            }
            Ok(ConsumerInput {
                id: id.to_string(),
                zone: zone.filter(|z| !z.is_empty()),
            })
        })
        .collect()
}

fn read_previous(path: &str) -> Result<Allocation, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let value: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{path}: malformed YAML/JSON: {e}"))?;
    let status = match value.get("kind").and_then(|k| k.as_str()) {
        Some("ConsumerGroup") => value.get("status").cloned().unwrap_or_default(),
        _ => value,
    };
    serde_path_to_error::deserialize(status)
        .map_err(|e| format!("{path}: {}: {}", e.path(), e.inner()))
}

fn table(group: &ConsumerGroup, plan: &Plan) -> String {
    let a = &plan.allocation;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ConsumerGroup {} ({:?}, {:?}): {} consumers, {} queues, {} topic(s)",
        group.name_any(),
        group.spec.strategy,
        group.spec.message_model,
        a.consumers,
        a.queues,
        group.spec.topics.len()
    );
    out.push('\n');
    let rows: Vec<[String; 3]> = a
        .assignments
        .iter()
        .map(|c| {
            let count: u64 = c
                .queues
                .iter()
                .map(|q| {
                    crate::assign::ranges::parse_ranges(&q.queue_ids)
                        .map(|r| crate::assign::ranges::count_ids(&r))
                        .unwrap_or(0)
                })
                .sum();
            let list = if c.queues.is_empty() {
                "-".to_string()
            } else {
                c.queues
                    .iter()
                    .map(|q| format!("{}/{}:{}", q.topic, q.broker, q.queue_ids))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            [c.consumer.clone(), count.to_string(), list]
        })
        .collect();
    write_table(&mut out, ["CONSUMER", "QUEUES", "ASSIGNED"], &rows);
    if !a.unassigned_queues.is_empty() {
        let list: Vec<String> = a
            .unassigned_queues
            .iter()
            .map(|q| format!("{}/{}:{}", q.topic, q.broker, q.queue_ids))
            .collect();
        let _ = writeln!(out, "\nUNASSIGNED: {}", list.join(" "));
    }
    if a.moved_queues > 0 {
        let _ = writeln!(out, "\nMOVED: {} queues changed owner", a.moved_queues);
    }
    let producer_rows: Vec<[String; 3]> = a
        .producers
        .iter()
        .flat_map(|p| {
            p.brokers.iter().map(|b| {
                [
                    format!("{}/{}", p.topic, b.broker),
                    b.queue_ids.clone(),
                    b.share.clone(),
                ]
            })
        })
        .collect();
    if !producer_rows.is_empty() {
        out.push('\n');
        write_table(
            &mut out,
            ["PRODUCER ROUTE", "QUEUES", "SHARE"],
            &producer_rows,
        );
    }
    let mut warnings: Vec<String> = idle_summary(a).into_iter().collect();
    // With one topic the per-topic idle warning repeats the summary line.
    let single_topic = group.spec.topics.len() == 1;
    warnings.extend(
        plan.warnings
            .iter()
            .filter(|w| !(single_topic && matches!(w, PlanWarning::MoreConsumersThanQueues { .. })))
            .map(ToString::to_string),
    );
    if !warnings.is_empty() {
        out.push('\n');
        for w in warnings {
            let _ = writeln!(out, "WARNING: {w}");
        }
    }
    out
}

fn write_table(out: &mut String, header: [&str; 3], rows: &[[String; 3]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let _ = writeln!(
        out,
        "{:<w0$}  {:<w1$}  {}",
        header[0],
        header[1],
        header[2],
        w0 = widths[0],
        w1 = widths[1]
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {}",
            row[0],
            row[1],
            row[2],
            w0 = widths[0],
            w1 = widths[1]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn client_ids_with_at_hash_colons_and_dots_keep_their_zones() {
        let cli = crate::cli::Cli::parse_from([
            "rebalancer",
            "plan",
            "-f",
            "g.yaml",
            "--consumers",
            "10.244.1.7@12345#1717=az1, fd00::7@7 ,room1@10.0.0.1@1=room1",
            "--consumers",
            "10.0.0.9@DEFAULT",
            "--route",
            "orders=route.json",
        ]);
        let crate::cli::Command::Plan(args) = cli.command else {
            panic!("not plan");
        };
        let got: Vec<(String, Option<String>)> = consumers(&args, "g")
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.zone))
            .collect();
        let want = [
            ("10.244.1.7@12345#1717", Some("az1")),
            ("fd00::7@7", None),
            ("room1@10.0.0.1@1", Some("room1")),
            ("10.0.0.9@DEFAULT", None),
        ];
        let want: Vec<(String, Option<String>)> = want
            .iter()
            .map(|(id, z)| (id.to_string(), z.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(args.routes[0].topic, "orders");
    }
}
