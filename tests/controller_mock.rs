//! The reconcilers against a mocked API server: every request they make is checked, in order,
//! method, path, query and body, and answered; a request that is not expected fails the test, and
//! so does an expected one that never comes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::controller::Action;
use rebalancer::api::{ConsumerGroup, Topic};
use rebalancer::controller::leader::Leadership;
use rebalancer::controller::metrics::Metrics;
use rebalancer::controller::{Context, Error, group, topic};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio::time::timeout;

const NS: &str = "shop";
const GROUP: &str = "cg";
const DEPLOYMENT: &str = "consumer";
const SELECTOR: &str = "app=consumer";
const GROUP_LABEL: &str = "rebalancer.dev/consumer-group";
const QUEUES_ANNOTATION: &str = "rebalancer.dev/queues";
/// A transition time far in the past: kept as long as a condition's status holds.
const EARLIER: &str = "2025-01-01T00:00:00Z";
/// Deadline for a request that should come; only reached when the test fails.
const DEADLINE: Duration = Duration::from_secs(20);
/// Requeue interval of a reconcile that finished.
const RESYNC: Duration = Duration::from_secs(300);

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

impl ApiServer {
    /// Starts reconciling a ConsumerGroup.
    fn start_group(&mut self, ctx: &Arc<Context>, group: ConsumerGroup) {
        assert!(self.running.is_none(), "a reconcile is already running");
        let task = tokio::spawn(group::reconcile(Arc::new(group), ctx.clone()));
        self.running = Some(task);
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

    async fn get_topic(&mut self, topic: &Value) {
        let name = topic["metadata"]["name"].as_str().unwrap();
        let (_, send) = self
            .expect(
                Method::GET,
                &format!("/apis/rebalancer.dev/v1alpha1/namespaces/{NS}/topics/{name}"),
            )
            .await;
        reply(send, StatusCode::OK, topic);
    }

    async fn topic_not_found(&mut self, name: &str) {
        let (_, send) = self
            .expect(
                Method::GET,
                &format!("/apis/rebalancer.dev/v1alpha1/namespaces/{NS}/topics/{name}"),
            )
            .await;
        let status = json!({
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": format!("topics.rebalancer.dev \"{name}\" not found"),
            "reason": "NotFound",
            "details": {"name": name, "group": "rebalancer.dev", "kind": "topics"},
            "code": 404
        });
        reply(send, StatusCode::NOT_FOUND, &status);
    }

    async fn get_scale(&mut self, replicas: i32) {
        let (_, send) = self
            .expect(
                Method::GET,
                &format!("/apis/apps/v1/namespaces/{NS}/deployments/{DEPLOYMENT}/scale"),
            )
            .await;
        let scale = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": DEPLOYMENT, "namespace": NS},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "selector": SELECTOR}
        });
        reply(send, StatusCode::OK, &scale);
    }

    async fn list_pods(&mut self, selector: &str, pods: &[Value]) {
        let (call, send) = self
            .expect(Method::GET, &format!("/api/v1/namespaces/{NS}/pods"))
            .await;
        assert_eq!(
            call.query.get("labelSelector").map(String::as_str),
            Some(selector),
            "pod list with the wrong selector: {call:#?}"
        );
        let list = json!({
            "apiVersion": "v1",
            "kind": "PodList",
            "metadata": {"resourceVersion": "100"},
            "items": pods
        });
        reply(send, StatusCode::OK, &list);
    }

    /// The pods the scale's selector matches.
    async fn list_selected(&mut self, pods: &[Value]) {
        self.list_pods(SELECTOR, pods).await;
    }

    /// The pods that carry the group label (to find leavers).
    async fn list_labelled(&mut self, pods: &[Value]) {
        self.list_pods(&format!("{GROUP_LABEL}={GROUP}"), pods)
            .await;
    }

    /// A merge patch of a pod's metadata; returns the patch.
    async fn patch_pod(&mut self, name: &str) -> Value {
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
            Some("rebalancer")
        );
        // Only the label and the annotation are touched.
        let metadata = call.body["metadata"].as_object().unwrap();
        assert_eq!(call.body.as_object().unwrap().len(), 1, "{call:#?}");
        assert_eq!(
            metadata.keys().collect::<Vec<_>>(),
            ["annotations", "labels"],
            "{call:#?}"
        );
        reply(send, StatusCode::OK, &pod(name, true, None));
        call.body
    }

    /// A pod patch that makes it a member owning `queues`.
    async fn patch_member(&mut self, name: &str, queues: &str) {
        let patch = self.patch_pod(name).await;
        assert_eq!(
            patch,
            json!({"metadata": {
                "labels": {GROUP_LABEL: GROUP},
                "annotations": {QUEUES_ANNOTATION: queues}
            }}),
            "patch of pod {name}"
        );
    }

    /// A server-side apply of `/status`; returns the applied body.
    async fn apply_status(&mut self, object: &Value) -> Value {
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
            Some("rebalancer")
        );
        assert_eq!(call.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(call.body["apiVersion"], "rebalancer.dev/v1alpha1");
        assert_eq!(call.body["kind"], object["kind"]);
        let mut updated = object.clone();
        updated["status"] = call.body["status"].clone();
        reply(send, StatusCode::OK, &updated);
        call.body
    }

    /// An Event created by kube's `Recorder`; returns it.
    async fn event(&mut self) -> Value {
        let (call, send) = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
            )
            .await;
        assert_eq!(call.body["apiVersion"], "events.k8s.io/v1");
        assert_eq!(call.body["kind"], "Event");
        assert_eq!(call.body["reportingController"], "rebalancer");
        assert_eq!(call.body["reportingInstance"], "rebalancer-0");
        reply(send, StatusCode::CREATED, &call.body);
        call.body
    }

    /// An Event of `type_`/`reason` about the ConsumerGroup.
    async fn group_event(&mut self, type_: &str, reason: &str) -> Value {
        let event = self.event().await;
        assert_eq!(event["type"], type_, "{event:#}");
        assert_eq!(event["reason"], reason, "{event:#}");
        assert_eq!(event["action"], "Rebalance", "{event:#}");
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

fn group_json(strategy: &str, status: Option<Value>) -> Value {
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1",
        "kind": "ConsumerGroup",
        "metadata": {"name": GROUP, "namespace": NS, "uid": "group-uid", "generation": 1, "resourceVersion": "10"},
        "spec": {
            "topics": ["orders"],
            "strategy": strategy,
            "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT}}
        },
        "status": status
    })
}

fn consumer_group(object: &Value) -> ConsumerGroup {
    serde_json::from_value(object.clone()).unwrap()
}

/// The annotation value of a consumer owning `ids` of broker-a of `orders`.
fn queues(ids: &str) -> String {
    format!(r#"[{{"topic":"orders","broker":"broker-a","queueIds":"{ids}"}}]"#)
}

/// A pod of the Deployment; `membership` is the group label's presence and the annotation.
fn pod(name: &str, ready: bool, membership: Option<&str>) -> Value {
    let mut labels = json!({"app": "consumer"});
    let mut annotations = json!({});
    if let Some(q) = membership {
        labels[GROUP_LABEL] = json!(GROUP);
        annotations[QUEUES_ANNOTATION] = json!(q);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations},
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

/// Scenario 1's requests (2 ready pods, 8 queues, Averagely, no status yet); returns the applied
/// status.
async fn first_assignment_requests(server: &mut ApiServer, group: &Value) -> Value {
    server.get_topic(&orders(8)).await;
    server.get_scale(2).await;
    server
        .list_selected(&[pod("consumer-a", true, None), pod("consumer-b", true, None)])
        .await;
    server.patch_member("consumer-a", &queues("0-3")).await;
    server.patch_member("consumer-b", &queues("4-7")).await;
    server
        .list_labelled(&[
            pod("consumer-a", true, Some(&queues("0-3"))),
            pod("consumer-b", true, Some(&queues("4-7"))),
        ])
        .await;
    let applied = server.apply_status(group).await;
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "2 consumers, 8 queues, 0 moved");
    applied["status"].clone()
}

#[tokio::test]
async fn first_assignment_annotates_pods_and_writes_status() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Averagely", None);
    server.start_group(&ctx, consumer_group(&group));

    let status = first_assignment_requests(&mut server, &group).await;
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
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["lastRebalanceTime"].is_string(), "{status:#}");
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["reason"], "Rebalanced");
    assert_eq!(ready["message"], "2 consumers, 8 queues");
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
    server.start_group(&ctx, consumer_group(&group));

    server.get_topic(&orders(8)).await;
    server.get_scale(3).await;
    server
        .list_selected(&[
            pod("consumer-a", true, Some(&queues("0-3"))),
            pod("consumer-b", true, Some(&queues("4-7"))),
            pod("consumer-c", true, None),
        ])
        .await;
    server.patch_member("consumer-a", &queues("0-2")).await;
    server.patch_member("consumer-b", &queues("3-5")).await;
    server.patch_member("consumer-c", &queues("6-7")).await;
    server
        .list_labelled(&[
            pod("consumer-a", true, Some(&queues("0-2"))),
            pod("consumer-b", true, Some(&queues("3-5"))),
            pod("consumer-c", true, Some(&queues("6-7"))),
        ])
        .await;
    let status = server.apply_status(&group).await["status"].clone();
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
async fn scale_down_releases_the_departed_pod() {
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Averagely", Some(two_consumer_status()));
    server.start_group(&ctx, consumer_group(&group));

    server.get_topic(&orders(8)).await;
    server.get_scale(1).await;
    server
        .list_selected(&[pod("consumer-a", true, Some(&queues("0-3")))])
        .await;
    server.patch_member("consumer-a", &queues("0-7")).await;
    // consumer-b is gone from the selector but still carries the label.
    server
        .list_labelled(&[
            pod("consumer-a", true, Some(&queues("0-7"))),
            pod("consumer-b", true, Some(&queues("4-7"))),
        ])
        .await;
    let patch = server.patch_pod("consumer-b").await;
    assert_eq!(
        patch,
        json!({"metadata": {"labels": {GROUP_LABEL: null}, "annotations": {QUEUES_ANNOTATION: null}}})
    );
    let status = server.apply_status(&group).await["status"].clone();
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
    server.start_group(&ctx, consumer_group(&group));

    server.get_topic(&orders(4)).await;
    server.get_scale(10).await;
    server
        .list_selected(&[
            pod("consumer-a", true, None),
            pod("consumer-b", true, None),
            pod("consumer-c", true, None),
            // Not ready: no consumer, left alone.
            pod("consumer-d", false, None),
        ])
        .await;
    server.patch_member("consumer-a", &queues("0-1")).await;
    server.patch_member("consumer-b", &queues("2")).await;
    server.patch_member("consumer-c", &queues("3")).await;
    server
        .list_labelled(&[
            pod("consumer-a", true, Some(&queues("0-1"))),
            pod("consumer-b", true, Some(&queues("2"))),
            pod("consumer-c", true, Some(&queues("3"))),
        ])
        .await;
    let status = server.apply_status(&group).await["status"].clone();
    server.group_event("Normal", "Rebalanced").await;
    let message = "10 replicas, 4 queues on topic orders: 6 consumers idle";
    let on_group = server.group_event("Warning", "IdleConsumers").await;
    assert_eq!(on_group["note"], message);
    let on_workload = server.event().await;
    assert_eq!(on_workload["type"], "Warning");
    assert_eq!(on_workload["reason"], "IdleConsumers");
    assert_eq!(on_workload["note"], message);
    assert_eq!(
        on_workload["regarding"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT, "namespace": NS})
    );
    server.settle().await.expect("reconcile");

    assert_eq!(status["consumers"], 3);
    assert_eq!(status["queues"], 4);
    assert_eq!(status["desiredReplicas"], 10);
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
    server.start_group(&ctx, consumer_group(&group));

    server.topic_not_found("orders").await;
    let status = server.apply_status(&group).await["status"].clone();
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
    server.finish(ctx).await;
}

#[tokio::test]
async fn unchanged_group_writes_nothing() {
    let (mut server, ctx) = setup(Leadership::always());
    let fresh = group_json("Averagely", None);
    server.start_group(&ctx, consumer_group(&fresh));
    let status = first_assignment_requests(&mut server, &fresh).await;
    server.settle().await.expect("first reconcile");

    // The group as the watch now sees it, and its pods as annotated.
    let group = group_json("Averagely", Some(status));
    let members = [
        pod("consumer-a", true, Some(&queues("0-3"))),
        pod("consumer-b", true, Some(&queues("4-7"))),
    ];
    server.start_group(&ctx, consumer_group(&group));
    server.get_topic(&orders(8)).await;
    server.get_scale(2).await;
    server.list_selected(&members).await;
    server.list_labelled(&members).await;
    let action = server.settle().await.expect("second reconcile");
    assert_eq!(action, Action::requeue(RESYNC));
    server.finish(ctx).await;
}

#[tokio::test]
async fn sticky_after_restart_moves_only_the_new_share() {
    // A fresh Context: nothing remembered but the status.
    let (mut server, ctx) = setup(Leadership::always());
    let group = group_json("Sticky", Some(two_consumer_status()));
    server.start_group(&ctx, consumer_group(&group));

    server.get_topic(&orders(8)).await;
    server.get_scale(3).await;
    server
        .list_selected(&[
            pod("consumer-a", true, Some(&queues("0-3"))),
            pod("consumer-b", true, Some(&queues("4-7"))),
            pod("consumer-c", true, None),
        ])
        .await;
    server.patch_member("consumer-a", &queues("0-2")).await;
    server.patch_member("consumer-b", &queues("4-6")).await;
    server.patch_member("consumer-c", &queues("3,7")).await;
    server
        .list_labelled(&[
            pod("consumer-a", true, Some(&queues("0-2"))),
            pod("consumer-b", true, Some(&queues("4-6"))),
            pod("consumer-c", true, Some(&queues("3,7"))),
        ])
        .await;
    let status = server.apply_status(&group).await["status"].clone();
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
    let group = group_json("Averagely", Some(two_consumer_status()));
    server.start_group(&ctx, consumer_group(&group));
    let action = server.settle().await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));

    let topic: Topic = serde_json::from_value(orders(8)).unwrap();
    server.start_topic(&ctx, topic);
    server.settle().await.expect("topic reconcile");
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
    let topic: Topic = serde_json::from_value(object.clone()).unwrap();
    server.start_topic(&ctx, topic);

    let status = server.apply_status(&object).await["status"].clone();
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
    let topic: Topic = serde_json::from_value(object).unwrap();
    server.start_topic(&ctx, topic);
    server.settle().await.expect("second reconcile");
    server.finish(ctx).await;
}

#[tokio::test]
async fn invalid_spec_is_reported_without_reading_anything() {
    let (mut server, ctx) = setup(Leadership::always());
    let mut group = group_json("Averagely", Some(two_consumer_status()));
    group["spec"].as_object_mut().unwrap().remove("consumers");
    server.start_group(&ctx, consumer_group(&group));

    let status = server.apply_status(&group).await["status"].clone();
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
    let fresh = group_json("Averagely", None);
    server.start_group(&ctx, consumer_group(&fresh));
    let status = first_assignment_requests(&mut server, &fresh).await;
    server.settle().await.expect("first reconcile");
    assert_eq!(status["assignmentsTruncated"], true, "{status:#}");
    assert_eq!(status["assignments"], json!([]));
    let truncated = condition(&status, "StatusTruncated");
    assert_eq!(truncated["status"], "True");
    assert_eq!(truncated["reason"], "StatusTooLarge");

    // Same pods, same queues: the annotations are the assignment in force, nothing to write.
    let group = group_json("Averagely", Some(status));
    let members = [
        pod("consumer-a", true, Some(&queues("0-3"))),
        pod("consumer-b", true, Some(&queues("4-7"))),
    ];
    server.start_group(&ctx, consumer_group(&group));
    server.get_topic(&orders(8)).await;
    server.get_scale(2).await;
    server.list_selected(&members).await;
    server.list_labelled(&members).await;
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
    server.start_group(&ctx, consumer_group(&group));

    server.get_topic(&orders(8)).await;
    server.get_scale(3).await;
    server
        .list_selected(&[
            pod("consumer-a", true, Some(&queues("0-3"))),
            pod("consumer-b", true, Some(&queues("4-7"))),
            pod("consumer-c", true, None),
        ])
        .await;
    server.patch_member("consumer-a", &queues("0-2")).await;
    server.patch_member("consumer-b", &queues("4-6")).await;
    server.patch_member("consumer-c", &queues("3,7")).await;
    server
        .list_labelled(&[
            pod("consumer-a", true, Some(&queues("0-2"))),
            pod("consumer-b", true, Some(&queues("4-6"))),
            pod("consumer-c", true, Some(&queues("3,7"))),
        ])
        .await;
    let status = server.apply_status(&group).await["status"].clone();
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
    let fresh = group_json("Averagely", None);
    server.start_group(&ctx, consumer_group(&fresh));
    server.get_topic(&orders(8)).await;
    server.get_scale(0).await;
    server.list_selected(&[]).await;
    server.list_labelled(&[]).await;
    let status = server.apply_status(&fresh).await["status"].clone();
    let event = server.group_event("Normal", "Rebalanced").await;
    assert_eq!(event["note"], "0 consumers, 8 queues, 0 moved");
    server.settle().await.expect("first reconcile");
    assert_eq!(status["consumers"], 0);
    assert_eq!(status["queues"], 8);
    assert_eq!(status["assignments"], json!([]));
    assert_eq!(status["warnings"], json!(["no ready consumer pods"]));
    assert_eq!(condition(&status, "Ready")["status"], "True");

    // Still nobody: nothing to write, no second Rebalanced event.
    let group = group_json("Averagely", Some(status));
    server.start_group(&ctx, consumer_group(&group));
    server.get_topic(&orders(8)).await;
    server.get_scale(0).await;
    server.list_selected(&[]).await;
    server.list_labelled(&[]).await;
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
    server.start_group(&ctx, consumer_group(&group));
    server.get_topic(&orders(11)).await;
    server.get_scale(2).await;
    // consumer-b held a stale annotation from an earlier assignment.
    server
        .list_selected(&[
            pod("consumer-a", true, None),
            pod("consumer-b", true, Some("[]")),
        ])
        .await;
    server.patch_member("consumer-a", &queues("0-5")).await;
    let patch = server.patch_pod("consumer-b").await;
    assert_eq!(patch["metadata"]["labels"][GROUP_LABEL], GROUP);
    assert!(
        patch["metadata"]["annotations"][QUEUES_ANNOTATION].is_null(),
        "{patch:#}"
    );
    server.list_labelled(&[]).await;
    let status = server.apply_status(&group).await["status"].clone();
    let c = condition(&status, "AnnotationsTruncated");
    assert_eq!(c["status"], "True");
    assert_eq!(c["reason"], "AnnotationTooLarge");
    assert!(c["message"].as_str().unwrap().contains("consumer-b"), "{c}");
    // The status still carries consumer-b's queues.
    assert_eq!(status["assignments"][1]["consumer"], "consumer-b");
    server.group_event("Normal", "Rebalanced").await;
    server.settle().await.expect("reconcile");
    server.finish(ctx).await;
}
