//! `plan --route TOPIC=FILE`: a topic's route, as `mqadmin topicRoute -t TOPIC` prints it
//! (`TopicRouteData` in fastjson, whose map keys may be unquoted numbers) or the same in YAML,
//! standing in for the Topic named TOPIC.

use kube::ResourceExt;

use super::load::read_source;
use crate::api::Topic;
use crate::plan::topic_sync::observed_brokers;
use crate::rocketmq::TopicRoute;
use crate::rocketmq::frame::parse_lenient;

/// One `--route TOPIC=FILE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteArg {
    /// The Topic (its name in the group's `spec.topics`) the route stands in for.
    pub topic: String,
    /// The file; `-` is stdin.
    pub file: String,
}

/// Parses `TOPIC=FILE`.
pub fn parse_route_arg(arg: &str) -> Result<RouteArg, String> {
    match arg.split_once('=') {
        Some((topic, file)) if !topic.trim().is_empty() && !file.trim().is_empty() => {
            Ok(RouteArg {
                topic: topic.trim().to_string(),
                file: file.trim().to_string(),
            })
        }
        _ => Err(format!(
            "--route {arg:?}: expected TOPIC=FILE (FILE may be - for stdin)"
        )),
    }
}

/// Parses a route's text: JSON as fastjson writes it (a text starting with `{`), else YAML.
/// Errors are one line, naming the field (`queueDatas[0].perm: ...`).
pub fn parse_route(text: &str) -> Result<TopicRoute, String> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err("empty route".into());
    }
    super::nesting::check(text)?;
    let value = if trimmed.starts_with('{') {
        parse_lenient(trimmed).map_err(|e| format!("malformed JSON: {e}"))?
    } else {
        let yaml: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            format!("malformed YAML/JSON: {e}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })?;
        json_of_yaml(yaml)?
    };
    if !value.is_object() {
        return Err("expected a TopicRouteData object (queueDatas, brokerDatas)".into());
    }
    let looks_like_object = value.get("kind").is_some() && value.get("apiVersion").is_some();
    let route: TopicRoute = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })?;
    crate::plan::topic_sync::check_route(&route)?;
    if route.queue_datas.is_empty() {
        let hint = if looks_like_object {
            " (this is a Kubernetes object: give it with -f)"
        } else {
            ""
        };
        return Err(format!(
            "queueDatas: missing or empty: the route names no broker{hint}"
        ));
    }
    for (i, q) in route.queue_datas.iter().enumerate() {
        if q.broker_name.is_empty() {
            return Err(format!("queueDatas[{i}].brokerName: must not be empty"));
        }
    }
    Ok(route)
}

/// YAML to JSON; scalar keys become strings (`0: host:port` as fastjson's `{0:"host:port"}`).
fn json_of_yaml(v: serde_yaml::Value) -> Result<serde_json::Value, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => b.into(),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| e.to_string())?,
        Y::String(s) => s.into(),
        Y::Sequence(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(json_of_yaml)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported map key {other:?}")),
                };
                out.insert(key, json_of_yaml(v)?);
            }
            serde_json::Value::Object(out)
        }
        Y::Tagged(t) => json_of_yaml(t.value)?,
    })
}

/// The Topic a route stands in for: named `name` in `namespace`, its brokers those of the route
/// (via [`observed_brokers`], the operator's own conversion: `perm` 6 read-write, 4 read-only,
/// 2 write-only). When the input files hold a Topic of that name, its `topicName` and its
/// brokers' zones are kept; its own layout is replaced by the route.
pub fn topic_of_route(
    name: &str,
    namespace: Option<&str>,
    route: &TopicRoute,
    base: Option<&Topic>,
) -> Topic {
    let base_brokers = base.map(|t| t.spec.brokers()).unwrap_or_default();
    let brokers: Vec<serde_json::Value> = observed_brokers(route)
        .into_iter()
        .map(|b| {
            let zone = base_brokers
                .iter()
                .find(|s| s.name == b.name)
                .and_then(|s| s.zone.clone());
            let mut broker = serde_json::json!({
                "name": b.name,
                "readQueues": b.read_queues,
                "writeQueues": b.write_queues,
                "permission": b.permission,
            });
            if let Some(zone) = zone {
                broker["zone"] = zone.into();
            }
            broker
        })
        .collect();
    let mut spec = serde_json::json!({ "brokers": brokers });
    if let Some(topic_name) = base.and_then(|t| t.spec.topic_name.clone()) {
        spec["topicName"] = topic_name.into();
    }
    let mut metadata = serde_json::json!({ "name": name });
    if let Some(ns) = namespace.or(base.and_then(|t| t.metadata.namespace.as_deref())) {
        metadata["namespace"] = ns.into();
    }
    let topic: Topic = serde_json::from_value(serde_json::json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Topic",
        "metadata": metadata,
        "spec": spec,
    }))
    .expect("a Topic built from a route deserializes");
    debug_assert_eq!(topic.name_any(), name);
    topic
}

/// Reads and parses every `--route`; errors name the file. At most one source (`-f` or
/// `--route`) may read stdin.
pub fn read_routes(args: &[RouteArg]) -> Result<Vec<(RouteArg, TopicRoute)>, String> {
    let mut out: Vec<(RouteArg, TopicRoute)> = Vec::new();
    for arg in args {
        if out.iter().any(|(a, _)| a.topic == arg.topic) {
            return Err(format!(
                "--route {}={}: topic {} has more than one --route",
                arg.topic, arg.file, arg.topic
            ));
        }
        let text = read_source(&arg.file).map_err(|e| e.to_string())?;
        let route = parse_route(&text)
            .map_err(|e| format!("{}: route of topic {}: {e}", arg.file, arg.topic))?;
        out.push((arg.clone(), route));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Permission;
    use crate::plan::topic_input;

    const MQADMIN: &str = r#"{
	"brokerDatas":[
		{
			"brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"},
			"brokerName":"broker-b",
			"cluster":"DefaultCluster"
		},
		{"brokerAddrs":{0:"10.0.0.3:10911"},"brokerName":"broker-a","cluster":"DefaultCluster"}
	],
	"filterServerTable":{},
	"queueDatas":[
		{"brokerName":"broker-b","perm":4,"readQueueNums":2,"topicSysFlag":0,"writeQueueNums":2},
		{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4},
		{"brokerName":"broker-c","perm":2,"readQueueNums":8,"topicSysFlag":0,"writeQueueNums":8}
	]
}"#;

    #[test]
    fn mqadmin_json_with_numeric_keys_becomes_a_topic() {
        let route = parse_route(MQADMIN).unwrap();
        let topic = topic_of_route("orders", Some("ns"), &route, None);
        assert_eq!(topic.namespace().as_deref(), Some("ns"));
        let input = topic_input(&topic);
        assert_eq!(input.name, "orders");
        let brokers: Vec<(&str, u32, Permission)> = input
            .brokers
            .iter()
            .map(|b| (b.name.as_str(), b.read_queues, b.permission))
            .collect();
        assert_eq!(
            brokers,
            [
                ("broker-a", 4, Permission::ReadWrite),
                ("broker-b", 2, Permission::ReadOnly),
                ("broker-c", 8, Permission::WriteOnly),
            ]
        );
        assert!(crate::api::validation::validate_topic(&topic.spec).is_empty());
    }

    #[test]
    fn yaml_with_integer_or_string_keys() {
        for key in ["0", "\"0\""] {
            let yaml = format!(
                "brokerDatas:\n- {{brokerName: broker-a, cluster: c, brokerAddrs: {{{key}: '10.0.0.1:10911'}}}}\nqueueDatas:\n- {{brokerName: broker-a, perm: 6, readQueueNums: 3, writeQueueNums: 3}}\n"
            );
            let route = parse_route(&yaml).unwrap();
            assert_eq!(route.broker_datas[0].master_addr(), Some("10.0.0.1:10911"));
            assert_eq!(route.queue_datas[0].read_queue_nums, 3);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_route(r#"{"queueDatas":[{"brokerName":"a","perm":"rw","readQueueNums":1,"writeQueueNums":1}]}"#)
            .unwrap_err();
        assert!(
            e.starts_with("queueDatas[0].perm: invalid type: string"),
            "{e}"
        );
        let e = parse_route(r#"{"queueDatas":[{"brokerName":"a","perm":6}]}"#).unwrap_err();
        assert!(
            e.starts_with("queueDatas[0]: missing field `readQueueNums`"),
            "{e}"
        );
        let e = parse_route("{\"queueDatas\":[}").unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
        let e = parse_route("brokerDatas: []\n").unwrap_err();
        assert!(e.starts_with("queueDatas: missing or empty"), "{e}");
        let e = parse_route("apiVersion: rebalancer.dev/v1alpha1\nkind: Topic\n").unwrap_err();
        assert!(e.ends_with("give it with -f)"), "{e}");
        let e = parse_route("queueDatas:\n- {brokerName: a, perm: 6, readQueueNums: 1, writeQueueNums: 1}\n- {brokerName: a, perm: 6, readQueueNums: 1, writeQueueNums: 1}\n").unwrap_err();
        assert_eq!(
            e,
            "queueDatas[1].brokerName: broker a appears more than once"
        );
        assert!(parse_route("  \n").is_err());
        assert!(parse_route("[1]").is_err());
    }

    #[test]
    fn route_args() {
        assert_eq!(
            parse_route_arg("orders=-").unwrap(),
            RouteArg {
                topic: "orders".into(),
                file: "-".into()
            }
        );
        assert_eq!(parse_route_arg("orders=a=b.json").unwrap().file, "a=b.json");
        for bad in ["orders", "=f", "orders="] {
            assert!(parse_route_arg(bad).is_err(), "{bad}");
        }
    }
}
