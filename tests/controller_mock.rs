//! The reconcilers against a mocked API server. A ConsumerGroup reconcile reads its world from
//! the watch caches (a [`Scope`] whose stores are filled here the way a reflector fills them) and
//! only writes: every request it makes is checked, in order, method, path, query and body, and
//! answered; a read (GET or LIST), a request that is not expected, or an expected one that never
//! comes fails the test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use rebalancer::api::{ConsumerGroup, Topic};
use rebalancer::controller::index::GroupIndex;
use rebalancer::controller::leader::Leadership;
use rebalancer::controller::metrics::Metrics;
use rebalancer::controller::pod_index::PodIndex;
use rebalancer::controller::scope::Scope;
use rebalancer::controller::{Context, Error, group, topic, watch};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const NS: &str = "shop";
const GROUP: &str = "cg";
const DEPLOYMENT: &str = "consumer";
const GROUP_LABEL: &str = "rebalancer.dev/consumer-group";
const QUEUES_ANNOTATION: &str = "rebalancer.dev/queues";
/// The group's `metadata.resourceVersion`: the precondition of its status writes.
const GROUP_VERSION: &str = "10";
/// A transition time far in the past: kept as long as a condition's status holds.
const EARLIER: &str = "2025-01-01T00:00:00Z";
/// Deadline for a request that should come; only reached when the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// Requeue interval of a reconcile that finished.
const RESYNC: Duration = Duration::from_secs(300);
/// Requeue of a decision made from a stale view (status write answered 409).
const STALE_RETRY: Duration = Duration::from_secs(2);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

/// One request as the API server received it.
#[derive(Debug)]
struct Call {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Value,
}

/// The mocked API server: the other end of the client's service.
struct ApiServer {
    handle: Handle,
    /// The reconcile being served.
    running: Option<JoinHandle<Result<Action, Error>>>,
}

fn setup(leadership: Leadership) -> (ApiServer, Arc<Context>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Context::new(
        client,
        Arc::new(Metrics::default()),
        leadership,
        Some("rebalancer-0".into()),
    );
    (
        ApiServer {
            handle,
            running: None,
        },
        Arc::new(ctx),
    )
}

/// A watch cache after its first list: `Init`, one `InitApply` per object, `InitDone`. (An
/// `Apply` before `InitDone` would be lost: `InitDone` swaps in the objects of the list.)
fn store<K>(objects: impl IntoIterator<Item = K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

fn parse<K: DeserializeOwned>(object: &Value) -> K {
    serde_json::from_value(object.clone()).unwrap()
}

/// What the caches of the group's namespace hold.
#[derive(Clone)]
struct World {
    group: Value,
    topics: Vec<Value>,
    pods: Vec<Value>,
    deployments: Vec<Value>,
}

impl World {
    /// `group`, topic `orders` with 8 queues, the Deployment with `replicas`, and `pods`.
    fn new(group: Value, replicas: i32, pods: &[Value]) -> Self {
        Self {
            group,
            topics: vec![orders(8)],
            pods: pods.to_vec(),
            deployments: vec![deployment(replicas)],
        }
    }

    /// The scope a reconcile reads: caches filled as the reflectors fill them (pods trimmed the
    /// same way), and the index.
    fn scope(&self, ctx: &Arc<Context>) -> Arc<Scope> {
        let group: ConsumerGroup = parse(&self.group);
        let index = GroupIndex::default();
        index.upsert(&group);
        let pods: Vec<Pod> = self
            .pods
            .iter()
            .map(|p| {
                let mut pod: Pod = parse(p);
                watch::trim_pod(&mut pod);
                pod
            })
            .collect();
        let pod_index = PodIndex::default();
        for pod in &pods {
            pod_index.observe(&watcher::Event::Apply(pod.clone()));
        }
        Arc::new(Scope {
            ctx: ctx.clone(),
            groups: store([group]),
            topics: store(self.topics.iter().map(parse::<Topic>)),
            pods: store(pods),
            pod_index: Arc::new(pod_index),
            deployments: store(self.deployments.iter().map(parse::<Deployment>)),
            statefulsets: store([]),
            replicasets: store([]),
            index: Arc::new(index),
            // Every cache above is listed.
            synced: tokio::sync::watch::channel(true).1,
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn reply(send: Reply, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

/// A `Status` failure as the API server answers it.
fn failure(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16()
    })
}

impl ApiServer {
    /// Starts reconciling the world's ConsumerGroup.
    fn start_group(&mut self, ctx: &Arc<Context>, world: &World) {
        assert!(self.running.is_none(), "a reconcile is already running");
        let scope = world.scope(ctx);
        let group = Arc::new(parse::<ConsumerGroup>(&world.group));
        self.running = Some(tokio::spawn(group::reconcile(group, scope)));
    }

    /// Starts reconciling a Topic.
    fn start_topic(&mut self, ctx: &Arc<Context>, topic: Topic) {
        assert!(self.running.is_none(), "a reconcile is already running");
        let task = tokio::spawn(topic::reconcile(Arc::new(topic), ctx.clone()));
        self.running = Some(task);
    }

    /// The next request; fails at once when the reconcile ends instead.
    async fn next(&mut self, expected: &str) -> (Call, Reply) {
        let Self { handle, running } = self;
        let ended = async {
            match running.as_mut() {
                Some(task) => task.await,
                None => std::future::pending().await,
            }
        };
        let (request, send) = tokio::select! {
            biased;
            request = handle.next_request() => request
                .unwrap_or_else(|| panic!("expected {expected}, but the client is gone")),
            result = ended => panic!("expected {expected}, but the reconcile ended: {result:?}"),
            () = tokio::time::sleep(DEADLINE) => {
                panic!("expected {expected}, but the reconciler sent nothing")
            }
        };
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let query = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let call = Call {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query,
            content_type: parts
                .headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string()),
            body,
        };
        if call.method == Method::GET && !expected.starts_with("GET ") {
            panic!("a read, where the caches must answer (expected {expected}): {call:#?}");
        }
        (call, send)
    }

    /// The next request, which must be `method path`.
    async fn expect(&mut self, method: Method, path: &str) -> (Call, Reply) {
        let expected = format!("{method} {path}");
        let (call, send) = self.next(&expected).await;
        assert_eq!(
            format!("{} {}", call.method, call.path),
            expected,
            "unexpected request: {call:#?}"
        );
        (call, send)
    }

    /// A merge patch of a pod's metadata, answered `status`; returns the patch.
    async fn patch_pod_answered(&mut self, name: &str, status: StatusCode) -> Value {
        let (call, send) = self
            .expect(
                Method::PATCH,
                &format!("/api/v1/namespaces/{NS}/pods/{name}"),
            )
            .await;
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/merge-patch+json"),
            "{call:#?}"
        );
        assert_eq!(
            call.query.get("fieldManager").map(String::as_str),
            Some("rebalancer"),
            "{call:#?}"
        );
        // Only the label and the annotation are touched (a pod joining the group is patched
        // with the resourceVersion its cache saw, a precondition, not a change).
        let metadata = call.body["metadata"].as_object().unwrap();
        assert_eq!(call.body.as_object().unwrap().len(), 1, "{call:#?}");
        assert_eq!(
            metadata
                .keys()
                .filter(|k| *k != "resourceVersion")
                .collect::<Vec<_>>(),
            ["annotations", "labels"],
            "{call:#?}"
        );
        if let Some(version) = metadata.get("resourceVersion") {
            assert!(version.is_string(), "{call:#?}");
        }
        let mut body = call.body.clone();
        body["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        if status.is_success() {
            reply(send, status, &pod(name, true, None));
        } else {
            let reason = status
                .canonical_reason()
                .unwrap_or("Failure")
                .replace(' ', "");
            reply(
                send,
                status,
                &failure(status, &reason, "refused by the test"),
            );
        }
        body
    }

    /// A merge patch of a pod's metadata; returns the patch.
    async fn patch_pod(&mut self, name: &str) -> Value {
        self.patch_pod_answered(name, StatusCode::OK).await
    }

    /// A pod patch that makes it a member owning `queues`.
    async fn patch_member(&mut self, name: &str, queues: &str) {
        let patch = self.patch_pod(name).await;
        assert_eq!(patch, member_patch(queues), "patch of pod {name}");
    }

    /// A pod patch that takes the pod out of the group.
    async fn patch_leaver(&mut self, name: &str) {
        let patch = self.patch_pod(name).await;
        assert_eq!(
            patch,
            json!({"metadata": {"labels": {GROUP_LABEL: null}, "annotations": {QUEUES_ANNOTATION: null}}}),
            "patch of pod {name}"
        );
    }

    /// A server-side apply of `/status`, answered `status`; returns the applied body.
    async fn apply_status_answered(&mut self, object: &Value, status: StatusCode) -> Value {
        let plural = match object["kind"].as_str().unwrap() {
            "ConsumerGroup" => "consumergroups",
            "Topic" => "topics",
            other => panic!("unexpected kind {other}"),
        };
        let name = object["metadata"]["name"].as_str().unwrap();
        let (call, send) = self
            .expect(
                Method::PATCH,
                &format!("/apis/rebalancer.dev/v1alpha1/namespaces/{NS}/{plural}/{name}/status"),
            )
            .await;
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{call:#?}"
        );
        assert_eq!(
            call.query.get("fieldManager").map(String::as_str),
            Some("rebalancer"),
            "{call:#?}"
        );
        assert_eq!(call.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(call.body["apiVersion"], "rebalancer.dev/v1alpha1");
        assert_eq!(call.body["kind"], object["kind"]);
        assert!(call.body["status"].is_object(), "{call:#?}");
        if status.is_success() {
            let mut updated = object.clone();
            updated["status"] = call.body["status"].clone();
            reply(send, status, &updated);
        } else {
            let reason = status
                .canonical_reason()
                .unwrap_or("Failure")
                .replace(' ', "");
            let message = "the object has been modified; please apply your changes to the latest version and try again";
            reply(send, status, &failure(status, &reason, message));
        }
        call.body
    }

    /// The group's status write: a server-side apply guarded by the group's resourceVersion;
    /// returns the status written.
    async fn apply_group_status(&mut self, group: &Value) -> Value {
        self.apply_group_status_answered(group, StatusCode::OK)
            .await
    }

    async fn apply_group_status_answered(&mut self, group: &Value, status: StatusCode) -> Value {
        let body = self.apply_status_answered(group, status).await;
        assert_eq!(
            body["metadata"],
            json!({"resourceVersion": group["metadata"]["resourceVersion"]}),
            "{body:#}"
        );
        assert_eq!(body["metadata"]["resourceVersion"], GROUP_VERSION);
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["apiVersion", "kind", "metadata", "status"]
        );
        body["status"].clone()
    }

    /// An Event created by the operator; returns it.
    async fn event(&mut self) -> Value {
        let (call, send) = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            )
            .await;
        assert_eq!(
            call.query.get("fieldManager").map(String::as_str),
            Some("rebalancer"),
            "{call:#?}"
        );
        assert_eq!(call.body["apiVersion"], "events.k8s.io/v1");
        assert_eq!(call.body["kind"], "Event");
        assert_eq!(call.body["metadata"]["namespace"], NS);
        assert!(call.body["eventTime"].is_string(), "{:#}", call.body);
        assert_eq!(call.body["reportingController"], "rebalancer");
        assert_eq!(call.body["reportingInstance"], "rebalancer-0");
        let name = call.body["metadata"]["name"].as_str().unwrap();
        let regarding = call.body["regarding"]["name"].as_str().unwrap();
        assert!(name.starts_with(&format!("{regarding}.")), "{name}");
        reply(send, StatusCode::CREATED, &call.body);
        call.body
    }

    /// An Event of `type_`/`reason` about the ConsumerGroup.
    async fn group_event(&mut self, type_: &str, reason: &str) -> Value {
        let event = self.event().await;
        assert_eq!(event["type"], type_, "{event:#}");
        assert_eq!(event["reason"], reason, "{event:#}");
        assert_eq!(event["action"], "Rebalance", "{event:#}");
        assert_eq!(event["regarding"]["apiVersion"], "rebalancer.dev/v1alpha1");
        assert_eq!(event["regarding"]["kind"], "ConsumerGroup", "{event:#}");
        assert_eq!(event["regarding"]["name"], GROUP, "{event:#}");
        assert_eq!(event["regarding"]["namespace"], NS, "{event:#}");
        event
    }

    /// Waits for the reconcile to end, and checks that it sent nothing the test did not answer.
    async fn settle(&mut self) -> Result<Action, Error> {
        let mut task = self.running.take().expect("no reconcile running");
        tokio::select! {
            biased;
            result = &mut task => {
                let result = result.expect("the reconcile panicked");
                if let Some(Some((request, _))) = self.handle.next_request().now_or_never() {
                    panic!("unexpected request: {} {}", request.method(), request.uri());
                }
                result
            }
            request = self.handle.next_request() => match request {
                Some((request, _)) => {
                    panic!("unexpected request: {} {}", request.method(), request.uri())
                }
                None => panic!("the client is gone but the reconcile did not finish"),
            },
            () = tokio::time::sleep(DEADLINE) => panic!("the reconcile did not finish"),
        }
    }

    /// Drops the client; no request may be left.
    async fn finish(mut self, ctx: Arc<Context>) {
        drop(ctx);
        match timeout(DEADLINE, self.handle.next_request()).await {
            Ok(None) => {}
            Ok(Some((request, _))) => {
                panic!("unexpected request: {} {}", request.method(), request.uri())
            }
            Err(_) => panic!("the client is still in use"),
        }
    }
}

fn topic_json(name: &str, brokers: Value) -> Value {
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1",
        "kind": "Topic",
        "metadata": {"name": name, "namespace": NS, "uid": "topic-uid", "generation": 1, "resourceVersion": "5"},
        "spec": {"brokers": brokers}
    })
}

/// Topic `orders` with `queues` read and write queues on broker-a.
fn orders(queues: u32) -> Value {
    topic_json(
        "orders",
        json!([{"name": "broker-a", "readQueues": queues, "writeQueues": queues}]),
    )
}

/// The Deployment of the consumers, as its cache keeps it.
fn deployment(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NS, "uid": "deployment-uid", "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "consumer"}},
            "template": {}
        }
    })
}

fn group_json(strategy: &str, status: Option<Value>) -> Value {
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1",
        "kind": "ConsumerGroup",
        "metadata": {"name": GROUP, "namespace": NS, "uid": "group-uid", "generation": 1, "resourceVersion": GROUP_VERSION},
        "spec": {
            "topics": ["orders"],
            "strategy": strategy,
            "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT}}
        },
        "status": status
    })
}

/// The annotation value of a consumer owning `ids` of broker-a of `orders`.
fn queues(ids: &str) -> String {
    format!(r#"[{{"topic":"orders","broker":"broker-a","queueIds":"{ids}"}}]"#)
}

fn member_patch(queues: &str) -> Value {
    json!({"metadata": {
        "labels": {GROUP_LABEL: GROUP},
        "annotations": {QUEUES_ANNOTATION: queues}
    }})
}

/// A pod of the Deployment; `membership` is the group label's presence and the annotation.
fn pod(name: &str, ready: bool, membership: Option<&str>) -> Value {
    pod_labelled(name, "consumer", ready, membership)
}

/// A pod with label `app: app`.
fn pod_labelled(name: &str, app: &str, ready: bool, membership: Option<&str>) -> Value {
    let mut labels = json!({"app": app});
    let mut annotations = json!({"kubectl.kubernetes.io/restartedAt": EARLIER});
    if let Some(q) = membership {
        labels[GROUP_LABEL] = json!(GROUP);
        annotations[QUEUES_ANNOTATION] = json!(q);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations,
                     "resourceVersion": "20"},
        "spec": {"containers": [{"name": "consumer", "image": "consumer:1"}], "nodeName": "node-1"},
        "status": {"phase": if ready { "Running" } else { "Pending" }, "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}
        ]}
    })
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no condition {type_} in {status:#}"))
}

fn assignment(consumer: &str, ids: &str) -> Value {
    json!({"consumer": consumer, "queues": serde_json::from_str::<Value>(&queues(ids)).unwrap()})
}

/// The status of a group after an earlier rebalance over consumer-a and consumer-b
/// (8 queues of broker-a, 0-3 and 4-7).
fn two_consumer_status() -> Value {
    json!({
        "observedGeneration": 1,
        "desiredReplicas": 2,
        "maxUsefulReplicas": 8,
        "consumers": 2,
        "queues": 8,
        "idle": 0,
        "assignments": [assignment("consumer-a", "0-3"), assignment("consumer-b", "4-7")],
        "idleConsumers": [],
        "unassignedQueues": [],
        "movedQueues": 0,
        "warnings": [],
        "producers": [{"topic": "orders", "writeQueues": 8, "brokers": [
            {"broker": "broker-a", "queueIds": "0-7", "share": "100%"}
        ]}],
        "lastRebalanceTime": EARLIER,
        "conditions": [
            {"type": "IdleConsumers", "status": "False", "reason": "Balanced",
             "message": "every consumer owns at least one queue of each topic",
             "observedGeneration": 1, "lastTransitionTime": EARLIER},
            {"type": "Ready", "status": "True", "reason": "Rebalanced",
             "message": "2 consumers, 8 queues", "observedGeneration": 1, "lastTransitionTime": EARLIER}
        ]
    })
}

/// The pods of the two-consumer status, annotated as it says.
fn two_members() -> [Value; 2] {
    [
        pod("consumer-a", true, Some(&queues("0-3"))),
        pod("consumer-b", true, Some(&queues("4-7"))),
    ]
}

/// Scenario 1: 2 ready pods, 8 queues, Averagely, no status yet.
fn first_world() -> World {
    World::new(
        group_json("Averagely", None),
        2,
        &[pod("consumer-a", true, None), pod("consumer-b", true, None)],
    )
}

/// Scenario 1's requests; returns the applied status.
async fn first_assignment_requests(server: &mut ApiServer, group: &Value) -> Value {
    server.patch_member("consumer-a", &queues("0-3")).await;
    server.patch_member("consumer-b", &queues("4-7")).await;
    let status = server.apply_group_status(group).await;
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "2 consumers, 8 queues, 0 moved");
    status
}

#[tokio::test]
async fn first_assignment_annotates_pods_and_writes_status() {
    let (mut server, ctx) = setup(Leadership::always());
    let world = first_world();
    server.start_group(&ctx, &world);

    let status = first_assignment_requests(&mut server, &world.group).await;
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));

    assert_eq!(
        status["assignments"],
        json!([
            assignment("consumer-a", "0-3"),
            assignment("consumer-b", "4-7")
        ])
    );
    assert_eq!(status["consumers"], 2);
    assert_eq!(status["queues"], 8);
    assert_eq!(status["idle"], 0);
    assert_eq!(status["desiredReplicas"], 2);
    assert_eq!(status["maxUsefulReplicas"], 8);
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["lastRebalanceTime"].is_string(), "{status:#}");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "Rebalanced");
    assert_eq!(ready["message"], "2 consumers, 8 queues");
    assert_eq!(ready["observedGeneration"], 1);
    let idle = condition(&status, "IdleConsumers");
    assert_eq!(idle["status"], "False");
    assert_eq!(idle["reason"], "Balanced");
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["lastTransitionTime"].is_string())
    );
    server.finish(ctx).await;
}

#[tokio::test]
async fn scale_up_gives_the_new_pod_its_share() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Averagely", Some(two_consumer_status()));
    let [a, b] = two_members();
    let world = World::new(group.clone(), 3, &[a, b, pod("consumer-c", true, None)]);
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-2")).await;
    server.patch_member("consumer-b", &queues("3-5")).await;
    server.patch_member("consumer-c", &queues("6-7")).await;
    let status = server.apply_group_status(&group).await;
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "3 consumers, 8 queues, 3 moved");
    server.settle().await.expect("reconcile");

    assert_eq!(
        status["assignments"],
        json!([
            assignment("consumer-a", "0-2"),
            assignment("consumer-b", "3-5"),
            assignment("consumer-c", "6-7")
        ])
    );
    assert_eq!(status["consumers"], 3);
    assert_eq!(status["desiredReplicas"], 3);
    assert_eq!(status["movedQueues"], 3);
    assert_ne!(status["lastRebalanceTime"], EARLIER);
    let ready = condition(&status, "Ready");
    assert_eq!(ready["message"], "3 consumers, 8 queues");
    // Still Ready: the transition time stays.
    assert_eq!(ready["lastTransitionTime"], EARLIER);
    assert_eq!(
        condition(&status, "IdleConsumers")["lastTransitionTime"],
        EARLIER
    );
    server.finish(ctx).await;
}

#[tokio::test]
async fn scale_down_releases_the_departed_pods() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Averagely", Some(two_consumer_status()));
    let world = World::new(
        group.clone(),
        1,
        &[
            pod("consumer-a", true, Some(&queues("0-3"))),
            // Out of the selector, still labelled for the group.
            pod_labelled("consumer-b", "retired", true, Some(&queues("4-7"))),
            // Selected but not Ready any more.
            pod("consumer-c", false, Some("[]")),
            // Another group's pod that the selector does not match: none of our business.
            json!({"metadata": {"name": "other", "namespace": NS,
                "labels": {"app": "other", GROUP_LABEL: "other-group"},
                "annotations": {QUEUES_ANNOTATION: "[]"}}}),
        ],
    );
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-7")).await;
    server.patch_leaver("consumer-b").await;
    server.patch_leaver("consumer-c").await;
    let status = server.apply_group_status(&group).await;
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "1 consumers, 8 queues, 4 moved");
    server.settle().await.expect("reconcile");

    assert_eq!(
        status["assignments"],
        json!([assignment("consumer-a", "0-7")])
    );
    assert_eq!(status["consumers"], 1);
    assert_eq!(status["desiredReplicas"], 1);
    assert_eq!(status["movedQueues"], 4);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    server.finish(ctx).await;
}

#[tokio::test]
async fn more_replicas_than_queues_warns_on_group_and_workload() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Averagely", None);
    let mut world = World::new(
        group.clone(),
        10,
        &[
            pod("consumer-a", true, None),
            pod("consumer-b", true, None),
            pod("consumer-c", true, None),
            // Not ready: no consumer, left alone.
            pod("consumer-d", false, None),
        ],
    );
    world.topics = vec![orders(4)];
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-1")).await;
    server.patch_member("consumer-b", &queues("2")).await;
    server.patch_member("consumer-c", &queues("3")).await;
    let status = server.apply_group_status(&group).await;
    let rebalanced = server.group_event("Normal", "Rebalanced").await;
    let message = "10 replicas, 4 queues on topic orders: 6 consumers idle; at most 4 can own a queue (status.maxUsefulReplicas): scale to 4 or add queues";
    let on_group = server.group_event("Warning", "IdleConsumers").await;
    assert_eq!(on_group["note"], message);
    // Each Event is its own object.
    assert_ne!(on_group["metadata"]["name"], rebalanced["metadata"]["name"]);
    let on_workload = server.event().await;
    assert_eq!(on_workload["type"], "Warning");
    assert_eq!(on_workload["reason"], "IdleConsumers");
    assert_eq!(on_workload["action"], "Rebalance");
    assert_eq!(on_workload["note"], message);
    assert_eq!(
        on_workload["regarding"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT, "namespace": NS})
    );
    server.settle().await.expect("reconcile");

    assert_eq!(status["consumers"], 3);
    assert_eq!(status["queues"], 4);
    assert_eq!(status["desiredReplicas"], 10);
    assert_eq!(status["maxUsefulReplicas"], 4);
    let idle = condition(&status, "IdleConsumers");
    assert_eq!(idle["status"], "True");
    assert_eq!(idle["reason"], "MoreConsumersThanQueues");
    assert_eq!(idle["message"], message);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    server.finish(ctx).await;
}

#[tokio::test]
async fn missing_topic_keeps_the_last_assignment() {
    let (mut server, ctx) = setup(Leadership::always());
    let previous = two_consumer_status();
    let group = group_json("Averagely", Some(previous.clone()));
    // The pods as the last good assignment left them; a third pod that would change it.
    let [a, b] = two_members();
    let mut world = World::new(group.clone(), 2, &[a, b, pod("consumer-c", true, None)]);
    world.topics.clear();
    server.start_group(&ctx, &world);

    let status = server.apply_group_status(&group).await;
    let event = server.group_event("Warning", "TopicNotFound").await;
    assert_eq!(event["note"], "spec.topics: topic orders not found");
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));

    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "TopicNotFound");
    assert_eq!(ready["message"], "spec.topics: topic orders not found");
    assert_ne!(ready["lastTransitionTime"], EARLIER);
    // Everything else is the last good state.
    assert_eq!(
        condition(&status, "IdleConsumers"),
        condition(&previous, "IdleConsumers")
    );
    let mut rest = status.clone();
    let mut before = previous.clone();
    rest.as_object_mut().unwrap().remove("conditions");
    before.as_object_mut().unwrap().remove("conditions");
    assert_eq!(rest, before);

    // The same failure again (the status as written): nothing to write, no second Event.
    let mut again = world.clone();
    again.group["status"] = status;
    server.start_group(&ctx, &again);
    server.settle().await.expect("second reconcile");
    server.finish(ctx).await;
}

#[tokio::test]
async fn unchanged_group_writes_nothing() {
    let (mut server, ctx) = setup(Leadership::always());
    let fresh = first_world();
    server.start_group(&ctx, &fresh);
    let status = first_assignment_requests(&mut server, &fresh.group).await;
    server.settle().await.expect("first reconcile");

    // The group as the watch now sees it, and its pods as annotated.
    let world = World::new(group_json("Averagely", Some(status)), 2, &two_members());
    server.start_group(&ctx, &world);
    let action = server.settle().await.expect("second reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    server.finish(ctx).await;
}

#[tokio::test]
async fn sticky_after_restart_moves_only_the_new_share() {
    // A fresh Context: nothing remembered but the status.
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Sticky", Some(two_consumer_status()));
    let [a, b] = two_members();
    let world = World::new(group.clone(), 3, &[a, b, pod("consumer-c", true, None)]);
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-2")).await;
    server.patch_member("consumer-b", &queues("4-6")).await;
    server.patch_member("consumer-c", &queues("3,7")).await;
    let status = server.apply_group_status(&group).await;
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "3 consumers, 8 queues, 2 moved");
    server.settle().await.expect("reconcile");

    // consumer-c's share (8 queues / 3 consumers: 2) is all that moved; a and b keep 3 of their 4
    // each, the most a balanced assignment allows.
    assert_eq!(status["movedQueues"], 2);
    assert_eq!(
        status["assignments"],
        json!([
            assignment("consumer-a", "0-2"),
            assignment("consumer-b", "4-6"),
            assignment("consumer-c", "3,7")
        ])
    );
    server.finish(ctx).await;
}

#[tokio::test]
async fn follower_sends_nothing() {
    let (mut server, ctx) = setup(Leadership::follower());
    // A group with everything to do: new pods, a missing status.
    server.start_group(&ctx, &first_world());
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::await_change());

    let topic: Topic = parse(&orders(8));
    server.start_topic(&ctx, topic);
    let action = server.settle().await.expect("topic reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    server.finish(ctx).await;
}

#[tokio::test]
async fn topic_with_unread_queues_reports_queue_mismatch() {
    let (mut server, ctx) = setup(Leadership::always());
    let object = topic_json(
        "orders",
        json!([
            {"name": "broker-a", "readQueues": 4, "writeQueues": 8},
            {"name": "broker-b", "readQueues": 4, "writeQueues": 4}
        ]),
    );
    let topic: Topic = parse(&object);
    server.start_topic(&ctx, topic);

    let status = server.apply_status_answered(&object, StatusCode::OK).await["status"].clone();
    let message = "topic orders broker broker-a: writeQueues 8 > readQueues 4: messages sent to queues 4-7 are never consumed";
    let event = server.event().await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "QueueMismatch");
    assert_eq!(event["action"], "Validate");
    assert_eq!(event["note"], message);
    assert_eq!(event["regarding"]["kind"], "Topic");
    assert_eq!(event["regarding"]["name"], "orders");
    assert_eq!(event["regarding"]["namespace"], NS);
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::await_change());

    assert_eq!(status["readQueues"], 8);
    assert_eq!(status["writeQueues"], 12);
    assert_eq!(status["brokerCount"], 2);
    let mismatch = condition(&status, "QueueMismatch");
    assert_eq!(mismatch["status"], "True");
    assert_eq!(mismatch["reason"], "ReadWriteMismatch");
    assert_eq!(mismatch["message"], message);
    assert_eq!(condition(&status, "Ready")["status"], "True");

    // Reconciled again with that status: nothing to write, no second Event.
    let mut object = object;
    object["status"] = status;
    let topic: Topic = parse(&object);
    server.start_topic(&ctx, topic);
    server.settle().await.expect("second reconcile");
    server.finish(ctx).await;
}

/// A loopback address where nothing listens (a port just released): connections are refused.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[tokio::test]
async fn topic_whose_name_servers_do_not_answer_is_not_synced() {
    let (mut server, ctx) = setup(Leadership::always());
    let addr = closed_port();
    let mut object = topic_json("orders", Value::Null);
    object["spec"] = json!({"topicName": "Orders_V2", "nameServers": [addr]});
    server.start_topic(&ctx, parse(&object));

    let status = server.apply_status_answered(&object, StatusCode::OK).await["status"].clone();
    let event = server.event().await;
    assert_eq!(
        (&event["type"], &event["reason"], &event["action"]),
        (
            &json!("Warning"),
            &json!("NameServerUnreachable"),
            &json!("Sync")
        )
    );
    // Only the Synced transition is reported, not Ready's NotSynced as well.
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    let synced = condition(&status, "Synced");
    assert_eq!(synced["status"], "False");
    assert_eq!(synced["reason"], "NameServerUnreachable");
    let message = synced["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "no NameServer answered: cannot connect to RocketMQ at {addr}: "
        )),
        "{message}"
    );
    assert_eq!(event["note"], message);
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("NotSynced"))
    );
    assert_eq!(status.get("observed"), None, "{status:#}");
    assert_eq!(status["readQueues"], 0);

    // Reconciled again with that status: the same failure writes nothing and tells nobody.
    object["status"] = status;
    server.start_topic(&ctx, parse(&object));
    let action = server.settle().await.expect("second reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let text = ctx.metrics.encode();
    let failures = format!(
        "rebalancer_topic_sync_failures_total{{namespace=\"{NS}\",topic=\"orders\",reason=\"NameServerUnreachable\"}} 2"
    );
    assert!(text.contains(&failures), "{text}");
    server.finish(ctx).await;
}

#[tokio::test]
async fn topic_that_stops_syncing_loses_its_observed_layout() {
    let (mut server, ctx) = setup(Leadership::always());
    let mut object = orders(4);
    object["status"] = json!({
        "observedGeneration": 1, "brokerCount": 1, "readQueues": 2, "writeQueues": 2,
        "brokers": [{"name": "broker-a", "readQueues": 2, "writeQueues": 2, "producerShare": "100%"}],
        "observed": {"brokers": [{"name": "broker-a", "readQueues": 2, "writeQueues": 2, "permission": "ReadWrite"}],
            "lastSyncTime": "2026-01-01T00:00:00Z"},
        "conditions": [
            {"type": "Drifted", "status": "True", "reason": "SpecDiffers", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "QueueMismatch", "status": "False", "reason": "Matched", "message": "every broker reads the queues it writes", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Valid", "message": "2 readable, 2 writable queues", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Synced", "status": "True", "reason": "RouteRead", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    });
    // The spec no longer names NameServers: the Topic is static again, its spec the layout.
    server.start_topic(&ctx, parse(&object));
    let status = server.apply_status_answered(&object, StatusCode::OK).await["status"].clone();
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert_eq!(status.get("observed"), None, "{status:#}");
    assert_eq!(
        (&status["readQueues"], &status["writeQueues"]),
        (&json!(4), &json!(4))
    );
    let types: Vec<&Value> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["type"])
        .collect();
    assert_eq!(types, [&json!("QueueMismatch"), &json!("Ready")]);
    server.finish(ctx).await;
}

#[tokio::test]
async fn invalid_spec_is_reported_and_keeps_the_assignment() {
    let (mut server, ctx) = setup(Leadership::always());
    let mut group = group_json("Averagely", Some(two_consumer_status()));
    group["spec"].as_object_mut().unwrap().remove("consumers");
    let world = World::new(group.clone(), 2, &two_members());
    server.start_group(&ctx, &world);

    let status = server.apply_group_status(&group).await;
    let message = "spec.consumers: required: set workloadRef or selector";
    let event = server.group_event("Warning", "InvalidSpec").await;
    assert_eq!(event["note"], message);
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::await_change());

    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(ready["message"], message);
    assert_eq!(status["assignments"], two_consumer_status()["assignments"]);
    server.finish(ctx).await;
}

/// A status budget too small for any `assignments` list.
const TINY_BUDGET: usize = 300;

#[tokio::test]
async fn unchanged_group_with_truncated_status_writes_nothing() {
    let (mut server, mut ctx) = setup(Leadership::always());
    Arc::get_mut(&mut ctx).unwrap().status_budget = TINY_BUDGET;
    let fresh = first_world();
    server.start_group(&ctx, &fresh);
    let status = first_assignment_requests(&mut server, &fresh.group).await;
    server.settle().await.expect("first reconcile");
    assert_eq!(status["assignmentsTruncated"], true, "{status:#}");
    assert_eq!(status["assignments"], json!([]));
    let truncated = condition(&status, "StatusTruncated");
    assert_eq!(truncated["status"], "True");
    assert_eq!(truncated["reason"], "StatusTooLarge");

    // Same pods, same queues: the annotations are the assignment in force, nothing to write.
    let world = World::new(group_json("Averagely", Some(status)), 2, &two_members());
    server.start_group(&ctx, &world);
    server.settle().await.expect("second reconcile");
    server.finish(ctx).await;
}

#[tokio::test]
async fn sticky_with_truncated_status_keeps_the_annotated_queues() {
    let (mut server, mut ctx) = setup(Leadership::always());
    Arc::get_mut(&mut ctx).unwrap().status_budget = TINY_BUDGET;
    let mut previous = two_consumer_status();
    previous["assignments"] = json!([]);
    previous["assignmentsTruncated"] = json!(true);
    previous["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "StatusTruncated", "status": "True", "reason": "StatusTooLarge",
                     "message": "left out", "observedGeneration": 1, "lastTransitionTime": EARLIER}));
    let group = group_json("Sticky", Some(previous));
    let [a, b] = two_members();
    let world = World::new(group.clone(), 3, &[a, b, pod("consumer-c", true, None)]);
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-2")).await;
    server.patch_member("consumer-b", &queues("4-6")).await;
    server.patch_member("consumer-c", &queues("3,7")).await;
    let status = server.apply_group_status(&group).await;
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "3 consumers, 8 queues, 2 moved");
    server.settle().await.expect("reconcile");

    assert_eq!(status["movedQueues"], 2);
    assert_eq!(status["assignmentsTruncated"], true);
    assert_eq!(status["assignments"], json!([]));
    server.finish(ctx).await;
}

#[tokio::test]
async fn unchanged_empty_group_writes_nothing() {
    let (mut server, ctx) = setup(Leadership::always());
    let fresh = World::new(group_json("Averagely", None), 0, &[]);
    server.start_group(&ctx, &fresh);
    let status = server.apply_group_status(&fresh.group).await;
    // Scaled to zero: said in Ready, with no Event at all (no Normal Rebalanced for nobody, no
    // Warning for what was asked); `settle` fails on any request not awaited here.
    server.settle().await.expect("first reconcile");
    assert_eq!(status["consumers"], 0);
    assert_eq!(status["queues"], 8);
    assert_eq!(status["desiredReplicas"], 0);
    assert_eq!(status["assignments"], json!([]));
    assert_eq!(
        status["warnings"],
        json!(["no ready consumer pods", "8 queues assigned to no consumer"])
    );
    // Every readable queue is accounted for: owned by nobody, listed as unassigned.
    assert_eq!(
        status["unassignedQueues"],
        json!([{"topic": "orders", "broker": "broker-a", "queueIds": "0-7"}])
    );
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "NoConsumers");
    assert_eq!(condition(&status, "IdleConsumers")["status"], "False");

    // Still nobody: nothing to write, no Event.
    let world = World::new(group_json("Averagely", Some(status)), 0, &[]);
    server.start_group(&ctx, &world);
    server.settle().await.expect("second reconcile");
    server.finish(ctx).await;
}

#[tokio::test]
async fn queues_too_many_for_an_annotation_are_reported_not_written() {
    let (mut server, mut ctx) = setup(Leadership::always());
    // 11 queues: consumer-a's `[{"topic":"orders","broker":"broker-a","queueIds":"0-5"}]` is 57
    // bytes and fits; consumer-b's `..."6-10"}]` is 58 and does not.
    Arc::get_mut(&mut ctx).unwrap().annotation_budget = 57;
    let group = group_json("Averagely", None);
    // consumer-b holds a stale annotation from an earlier assignment.
    let mut world = World::new(
        group.clone(),
        2,
        &[
            pod("consumer-a", true, None),
            pod("consumer-b", true, Some("[]")),
        ],
    );
    world.topics = vec![orders(11)];
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-5")).await;
    let patch = server.patch_pod("consumer-b").await;
    assert_eq!(
        patch,
        json!({"metadata": {"labels": {GROUP_LABEL: GROUP}, "annotations": {QUEUES_ANNOTATION: null}}})
    );
    let status = server.apply_group_status(&group).await;
    let c = condition(&status, "AnnotationsTruncated");
    assert_eq!(c["status"], "True");
    assert_eq!(c["reason"], "AnnotationTooLarge");
    assert!(c["message"].as_str().unwrap().contains("consumer-b"), "{c}");
    assert!(
        !c["message"].as_str().unwrap().contains("consumer-a"),
        "{c}"
    );
    // The status still carries consumer-b's queues.
    assert_eq!(status["assignments"][1], assignment("consumer-b", "6-10"));
    server.group_event("Normal", "Rebalanced").await;
    server.settle().await.expect("reconcile");
    server.finish(ctx).await;
}

#[tokio::test]
async fn truncated_status_and_oversized_annotation_settle() {
    // Neither the status nor consumer-b's annotation can hold consumer-b's queues.
    let (mut server, mut ctx) = setup(Leadership::always());
    let budgets = Arc::get_mut(&mut ctx).unwrap();
    budgets.status_budget = TINY_BUDGET;
    budgets.annotation_budget = 57;
    let group = group_json("Averagely", None);
    let mut world = World::new(
        group.clone(),
        2,
        &[pod("consumer-a", true, None), pod("consumer-b", true, None)],
    );
    world.topics = vec![orders(11)];
    server.start_group(&ctx, &world);
    server.patch_member("consumer-a", &queues("0-5")).await;
    let patch = server.patch_pod("consumer-b").await;
    assert_eq!(
        patch,
        json!({"metadata": {"labels": {GROUP_LABEL: GROUP}, "annotations": {QUEUES_ANNOTATION: null}}})
    );
    let status = server.apply_group_status(&group).await;
    server.group_event("Normal", "Rebalanced").await;
    server.settle().await.expect("reconcile");
    assert_eq!(status["assignmentsTruncated"], true);
    assert_eq!(condition(&status, "AnnotationsTruncated")["status"], "True");

    // Converged: consumer-b labelled without an annotation. Nothing to write, no second
    // Rebalanced (it used to be re-reported at every reconcile).
    let mut labelled_only = pod("consumer-b", true, Some("unused"));
    labelled_only["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove(QUEUES_ANNOTATION);
    world.group["status"] = status;
    world.pods = vec![pod("consumer-a", true, Some(&queues("0-5"))), labelled_only];
    server.start_group(&ctx, &world);
    server.settle().await.expect("second reconcile");
    server.finish(ctx).await;
}

// Failure injection.

#[tokio::test]
async fn status_conflict_requeues_soon_and_publishes_no_event() {
    let (mut server, ctx) = setup(Leadership::always());
    let world = first_world();
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-3")).await;
    server.patch_member("consumer-b", &queues("4-7")).await;
    server
        .apply_group_status_answered(&world.group, StatusCode::CONFLICT)
        .await;
    // No Rebalanced Event: the status it describes was not written.
    let action = server.settle().await.expect("a conflict is not an error");
    assert_eq!(action, Action::requeue(STALE_RETRY));
    server.finish(ctx).await;
}

#[tokio::test]
async fn a_joining_pod_that_changed_meanwhile_is_decided_again() {
    // 409 on a pod joining the group: its resourceVersion precondition failed (another group may
    // have labelled it): nothing more is written, the group is reconciled again soon.
    let (mut server, ctx) = setup(Leadership::always());
    let world = first_world();
    server.start_group(&ctx, &world);

    server
        .patch_pod_answered("consumer-a", StatusCode::CONFLICT)
        .await;
    let action = server.settle().await.expect("a conflict is not an error");
    assert_eq!(action, Action::requeue(STALE_RETRY));
    server.finish(ctx).await;
}

#[tokio::test]
async fn a_rejected_pod_patch_does_not_stop_the_others_and_shows_on_the_group() {
    let (mut server, ctx) = setup(Leadership::always());
    let world = first_world();
    server.start_group(&ctx, &world);

    let patch = server
        .patch_pod_answered("consumer-a", StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    assert_eq!(patch, member_patch(&queues("0-3")));
    server.patch_member("consumer-b", &queues("4-7")).await;
    let status = server.apply_group_status(&world.group).await;
    assert_eq!(
        status["assignments"],
        json!([
            assignment("consumer-a", "0-3"),
            assignment("consumer-b", "4-7")
        ])
    );
    let ready = condition(&status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("WriteRejected"))
    );
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("the API server refused 1 write: pod shop/consumer-a (422: "),
        "{message}"
    );
    // One Warning naming the pod; no Normal "Rebalanced" for writes that did not all land.
    let event = server.group_event("Warning", "WriteRejected").await;
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("pod shop/consumer-a"),
        "{event:#}"
    );
    let action = server
        .settle()
        .await
        .expect("a refused pod is not an error");
    assert_eq!(action, Action::requeue(RESYNC));
    let text = ctx.metrics.encode();
    assert!(
        text.contains("rebalancer_writes_refused_total{resource=\"pods\"} 1"),
        "{text}"
    );

    // Reconciled again with that status, the pod refused again: the same status, not written.
    let mut group = world.group.clone();
    group["status"] = status;
    let world = World::new(
        group,
        2,
        &[
            pod("consumer-a", true, None),
            pod("consumer-b", true, Some(&queues("4-7"))),
        ],
    );
    server.start_group(&ctx, &world);
    server
        .patch_pod_answered("consumer-a", StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    // Nothing more: the same status, and the Warning went with the transition.
    let action = server.settle().await.expect("second reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    server.finish(ctx).await;
}

#[tokio::test]
async fn a_refused_status_keeps_the_last_one_and_says_why() {
    let (mut server, ctx) = setup(Leadership::always());
    let world = first_world();
    server.start_group(&ctx, &world);

    server.patch_member("consumer-a", &queues("0-3")).await;
    server.patch_member("consumer-b", &queues("4-7")).await;
    let refused = server
        .apply_group_status_answered(&world.group, StatusCode::PAYLOAD_TOO_LARGE)
        .await;
    assert!(refused["assignments"].is_array(), "{refused:#}");
    // The last status written (none yet) stays, with a Ready that says why.
    let last = server.apply_group_status(&world.group).await;
    assert_eq!(last["assignments"], json!([]), "{last:#}");
    let ready = condition(&last, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("WriteRejected"))
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("the API server refused 1 write: status (413: "),
        "{ready:#}"
    );
    server.group_event("Warning", "WriteRejected").await;
    let action = server
        .settle()
        .await
        .expect("a refused status is not an error");
    assert_eq!(action, Action::requeue(RESYNC));
    server.finish(ctx).await;
}

#[tokio::test]
async fn a_refused_topic_status_keeps_the_last_one_and_says_why() {
    let (mut server, ctx) = setup(Leadership::always());
    let object = topic_json(
        "orders",
        json!([{"name": "broker-a", "readQueues": 4, "writeQueues": 4}]),
    );
    server.start_topic(&ctx, parse(&object));

    let refused = server
        .apply_status_answered(&object, StatusCode::FORBIDDEN)
        .await;
    assert_eq!(refused["status"]["readQueues"], 4);
    let last = server.apply_status_answered(&object, StatusCode::OK).await["status"].clone();
    assert_eq!(last["readQueues"], 0, "{last:#}");
    let ready = condition(&last, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("WriteRejected"))
    );
    let event = server.event().await;
    assert_eq!(
        (
            &event["type"],
            &event["reason"],
            &event["regarding"]["kind"]
        ),
        (&json!("Warning"), &json!("WriteRejected"), &json!("Topic"))
    );
    server
        .settle()
        .await
        .expect("a refused status is not an error");
    let text = ctx.metrics.encode();
    assert!(
        text.contains("rebalancer_writes_refused_total{resource=\"topics/status\"} 1"),
        "{text}"
    );
    server.finish(ctx).await;
}

#[tokio::test]
async fn a_server_error_on_a_pod_stops_the_reconcile_for_a_quick_retry() {
    let (mut server, ctx) = setup(Leadership::always());
    let world = first_world();
    server.start_group(&ctx, &world);

    server
        .patch_pod_answered("consumer-a", StatusCode::INTERNAL_SERVER_ERROR)
        .await;
    // Nothing more: neither the other pod nor the status nor an Event.
    let error = server.settle().await.expect_err("a 500 is an error");
    assert_eq!(error.category(), "ServerError");
    assert!(error.is_transient());
    assert_eq!(error.retry_after(1), Duration::from_millis(500));
    assert!(
        error.to_string().starts_with("patch pod shop/consumer-a: "),
        "{error}"
    );
    server.finish(ctx).await;
}

/// A group whose consumers are a workload of a kind the operator does not cache.
fn rollout_group() -> Value {
    let mut group = group_json("Averagely", None);
    group["spec"]["consumers"] = json!({"workloadRef": {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": DEPLOYMENT
    }});
    group
}

const ROLLOUT_SCALE: &str = "/apis/argoproj.io/v1alpha1/namespaces/shop/rollouts/consumer/scale";

#[tokio::test]
async fn uncached_workload_kind_reads_its_scale_once() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = rollout_group();
    let mut world = World::new(
        group.clone(),
        2,
        &[pod("consumer-a", true, None), pod("consumer-b", true, None)],
    );
    world.deployments.clear();
    server.start_group(&ctx, &world);

    let (call, send) = server.expect(Method::GET, ROLLOUT_SCALE).await;
    assert_eq!(call.body, Value::Null);
    // Scaled to 0: the scale subresource omits `spec.replicas`.
    let scale = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {"name": DEPLOYMENT, "namespace": NS},
        "spec": {},
        "status": {"replicas": 2, "selector": "app=consumer"}
    });
    reply(send, StatusCode::OK, &scale);
    server.patch_member("consumer-a", &queues("0-3")).await;
    server.patch_member("consumer-b", &queues("4-7")).await;
    let status = server.apply_group_status(&group).await;
    server.group_event("Normal", "Rebalanced").await;
    server.settle().await.expect("reconcile");
    assert_eq!(status["desiredReplicas"], 0, "{status:#}");
    assert_eq!(status["consumers"], 2);
    server.finish(ctx).await;
}

#[tokio::test]
async fn uncached_workload_not_found_is_reported() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = rollout_group();
    let mut world = World::new(group.clone(), 2, &two_members());
    world.deployments.clear();
    server.start_group(&ctx, &world);

    let (_, send) = server.expect(Method::GET, ROLLOUT_SCALE).await;
    reply(
        send,
        StatusCode::NOT_FOUND,
        &failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "rollouts.argoproj.io \"consumer\" not found",
        ),
    );
    let status = server.apply_group_status(&group).await;
    let event = server.group_event("Warning", "WorkloadNotFound").await;
    assert_eq!(event["note"], "Rollout consumer not found");
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "WorkloadNotFound");
    server.finish(ctx).await;
}
