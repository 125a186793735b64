//! Availability of the operator against a real kube-apiserver (envtest), with the real
//! `rebalancer` binary under the chart's RBAC: two replicas and one Lease (only the holder
//! writes; SIGKILL and SIGTERM hand-overs), an API server restarted under a running operator,
//! and `/readyz` waiting for the watch caches. See `tests/support/`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use rebalancer::api::ConsumerGroup;
use serde_json::{Value, json};
use support::envtest::Server;
use support::fixtures::{Env, condition_is, group_of, queues_of};
use support::operator::{Launch, Operator};
use support::proxy::{CountingProxy, Hold};
use support::{eventually, eventually_within};

/// Topic `orders`, 2 brokers × 4 queues.
const ORDERS: [(&str, u32); 2] = [("broker-a", 4), ("broker-b", 4)];
/// The Lease the harness's replicas share (the binary's default name).
const LEASE: &str = "rebalancer-leader";
/// The operator's field manager (`src/controller/context.rs`).
const MANAGER: &str = "rebalancer";
/// `--lease-duration` of the harness's replicas; they renew every third of it.
const LEASE_SECS: u64 = 4;

fn deployment_group(workload: &str) -> Value {
    json!({
        "topics": ["orders"],
        "strategy": "Averagely",
        "consumers": {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload}}
    })
}

fn selector_group(app: &str) -> Value {
    json!({
        "topics": ["orders"],
        "strategy": "Averagely",
        "consumers": {"selector": {"matchLabels": {"app": app}}}
    })
}

/// `Ok` when the group is Ready with `n` consumers.
fn ready_with(g: &ConsumerGroup, n: u32) -> Result<(), String> {
    condition_is(g, "Ready", "True")?;
    let s = g.status.as_ref().ok_or("no status")?;
    if s.allocation.consumers == n {
        Ok(())
    } else {
        Err(format!("{} consumers, want {n}", s.allocation.consumers))
    }
}

/// The Lease's spec, or an error text when it is absent or unreadable.
async fn lease_spec(client: &Client, ns: &str) -> Result<LeaseSpec, String> {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    api.get_opt(LEASE)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|l| l.spec)
        .ok_or_else(|| "no Lease".to_string())
}

/// The Lease's object (with metadata), panicking when absent.
async fn lease_object(client: &Client, ns: &str) -> Lease {
    let api: Api<Lease> = Api::namespaced(client.clone(), ns);
    api.get(LEASE).await.expect("reading the Lease")
}

fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

fn transitions(spec: &LeaseSpec) -> i32 {
    spec.lease_transitions.unwrap_or(0)
}

/// Every Event (events.k8s.io/v1) of the namespace.
async fn events(client: &Client, ns: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("listing events")
        .items
}

fn describe_events(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {}/{} by {:?}/{:?}",
                e.reason.as_deref().unwrap_or_default(),
                e.regarding
                    .as_ref()
                    .and_then(|r| r.kind.as_deref())
                    .unwrap_or_default(),
                e.regarding
                    .as_ref()
                    .and_then(|r| r.name.as_deref())
                    .unwrap_or_default(),
                e.reporting_controller,
                e.reporting_instance
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `op` answers `path` with `code`.
async fn wait_http(op: &Operator, path: &str, code: u16) {
    eventually(
        &format!("{} {path} to answer {code}", op.identity),
        || async {
            match op.http_get(path).await {
                Ok((c, _)) if c == code => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Waits until metric `name{labels}` of `op` is present and at least `min`.
async fn wait_metric(op: &Operator, name: &str, labels: &str, min: f64) -> f64 {
    eventually(
        &format!("{} {name}{{{labels}}} >= {min}", op.identity),
        || async {
            match op.metric(name, labels).await {
                Some(v) if v >= min => Ok(v),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// Whether a managedFields entry owns `metadata.annotations[key]`.
fn owns_annotation(entry: &ManagedFieldsEntry, key: &str) -> bool {
    entry
        .fields_v1
        .as_ref()
        .and_then(|f| f.0.get("f:metadata"))
        .and_then(|m| m.get("f:annotations"))
        .and_then(|a| a.get(format!("f:{key}")))
        .is_some()
}

fn managers(entries: &[ManagedFieldsEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| format!("{:?} {:?} {:?}", e.manager, e.operation, e.subresource))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Two replicas, one Lease.
// ---------------------------------------------------------------------------------------------

/// Two replicas: the holder does every write (status, pod annotations, Events), the follower
/// watches and reconciles but writes nothing.
#[tokio::test]
async fn only_the_lease_holder_writes() {
    let Some(env) = Env::new("ha-only-holder-writes").await else {
        return;
    };
    let op_a = env.leader("op-a").await;
    let op_b = env.operator("op-b");
    // A standby is ready too: readiness does not depend on leadership.
    wait_http(&op_b, "/readyz", 200).await;

    env.topic("orders", &ORDERS).await;
    env.deployment("orders-consumer", 2).await;
    env.pods("orders-consumer", 2).await;
    env.group("orders-consumer", deployment_group("orders-consumer"))
        .await;
    env.wait_group("orders-consumer", "Ready with 2 consumers", |g| {
        ready_with(g, 2)
    })
    .await;
    // A change while both replicas watch.
    env.scale("orders-consumer", 3).await;
    env.pod("orders-consumer-2", json!({"app": "orders-consumer"}), true)
        .await;
    let group = env
        .wait_group("orders-consumer", "Ready with 3 consumers", |g| {
            ready_with(g, 3)
        })
        .await;
    assert_eq!(group.status.as_ref().unwrap().desired_replicas, Some(3));

    // The follower saw and reconciled the group (followers reconcile, they do not write).
    wait_metric(
        &op_b,
        "rebalancer_reconciles_total",
        "kind=\"ConsumerGroup\"",
        1.0,
    )
    .await;
    let spec = lease_spec(&env.client, &env.ns).await.unwrap();
    assert_eq!(holder(&spec), Some("op-a"), "{spec:?}");
    assert_eq!(
        transitions(&spec),
        1,
        "one acquisition, no hand-over: {spec:?}"
    );

    // Metrics: only the holder has write-side series for the group.
    let group_labels = format!("namespace=\"{}\",group=\"orders-consumer\"", env.ns);
    assert_eq!(op_a.metric("rebalancer_leader", "").await, Some(1.0));
    assert_eq!(op_b.metric("rebalancer_leader", "").await, Some(0.0));
    assert!(
        op_a.metric("rebalancer_queues_moved_total", &group_labels)
            .await
            .is_some(),
        "the holder rebalanced the group"
    );
    for name in ["rebalancer_queues_moved_total", "rebalancer_idle_consumers"] {
        assert_eq!(
            op_b.metric(name, &group_labels).await,
            None,
            "the follower computed a write ({name})"
        );
    }

    // Events: every one in the namespace comes from the holder.
    let events = events(&env.client, &env.ns).await;
    let text = describe_events(&events);
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Rebalanced")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("orders-consumer")),
        "no Rebalanced Event of the group:\n{text}"
    );
    for e in &events {
        assert_eq!(e.reporting_instance.as_deref(), Some("op-a"), "{text}");
        assert_eq!(e.reporting_controller.as_deref(), Some(MANAGER), "{text}");
    }

    // Field managers: the status and every pod's queues are the operator's writes.
    let fields = group.metadata.managed_fields.clone().unwrap_or_default();
    let status_managers: Vec<&ManagedFieldsEntry> = fields
        .iter()
        .filter(|e| e.subresource.as_deref() == Some("status"))
        .collect();
    assert!(!status_managers.is_empty(), "{:?}", managers(&fields));
    for e in status_managers {
        assert_eq!(
            e.manager.as_deref(),
            Some(MANAGER),
            "{:?}",
            managers(&fields)
        );
    }
    let pods = env.list_pods("app=orders-consumer").await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert_eq!(group_of(pod).as_deref(), Some("orders-consumer"));
        assert!(queues_of(pod).is_some(), "{} has no queues", pod.name_any());
        let fields = pod.metadata.managed_fields.clone().unwrap_or_default();
        let owners: Vec<&ManagedFieldsEntry> = fields
            .iter()
            .filter(|e| owns_annotation(e, support::fixtures::QUEUES_ANNOTATION))
            .collect();
        assert_eq!(
            owners.len(),
            1,
            "{}: {:?}",
            pod.name_any(),
            managers(&fields)
        );
        assert_eq!(owners[0].manager.as_deref(), Some(MANAGER));
    }

    assert!(
        !op_b.logs().contains("became leader"),
        "the follower led:\n{}",
        op_b.logs()
    );
    op_a.assert_clean();
    op_b.assert_clean();
}

/// Every write of the operator names its field manager, so that managedFields tell its writes
/// from anyone else's: the Lease and the Events too, not only the status and the pods.
#[tokio::test]
async fn every_write_carries_the_operators_field_manager() {
    let Some(env) = Env::new("ha-field-manager").await else {
        return;
    };
    let op = env.leader("op-m").await;
    env.topic("orders", &ORDERS).await;
    env.pods("c", 1).await;
    env.group("g", selector_group("c")).await;
    env.wait_group("g", "Ready with 1 consumer", |g| ready_with(g, 1))
        .await;
    let events = eventually("an Event of the group", || async {
        let events = events(&env.client, &env.ns).await;
        if events.is_empty() {
            Err("no Events".to_string())
        } else {
            Ok(events)
        }
    })
    .await;

    let lease = lease_object(&env.client, &env.ns).await;
    let fields = lease.metadata.managed_fields.unwrap_or_default();
    assert!(!fields.is_empty());
    for e in &fields {
        assert_eq!(
            e.manager.as_deref(),
            Some(MANAGER),
            "Lease: {:?}",
            managers(&fields)
        );
    }
    for event in &events {
        let fields = event.metadata.managed_fields.clone().unwrap_or_default();
        for e in &fields {
            assert_eq!(
                e.manager.as_deref(),
                Some(MANAGER),
                "Event {:?}: {:?}",
                event.reason,
                managers(&fields)
            );
        }
    }
    op.assert_clean();
}

/// SIGKILL of the holder (no release): the standby takes the Lease over once it expires, counts
/// a transition, and follows a change made while nobody led.
#[tokio::test]
async fn sigkill_of_the_holder_hands_over_within_the_lease_duration() {
    let Some(env) = Env::new("ha-sigkill-takeover").await else {
        return;
    };
    let mut op_a = env.leader("op-a").await;
    let op_b = env.operator("op-b");
    wait_http(&op_b, "/readyz", 200).await;
    env.topic("orders", &ORDERS).await;
    env.deployment("orders-consumer", 2).await;
    env.pods("orders-consumer", 2).await;
    env.group("orders-consumer", deployment_group("orders-consumer"))
        .await;
    env.wait_group("orders-consumer", "Ready with 2 consumers", |g| {
        ready_with(g, 2)
    })
    .await;
    let before = lease_spec(&env.client, &env.ns).await.unwrap();
    assert_eq!(holder(&before), Some("op-a"), "{before:?}");

    let killed = Instant::now();
    op_a.kill();
    // A change during the hand-over: the workload scales up and its new pod turns Ready.
    env.scale("orders-consumer", 3).await;
    env.pod("orders-consumer-2", json!({"app": "orders-consumer"}), true)
        .await;
    let changed_after = killed.elapsed();
    let during = lease_spec(&env.client, &env.ns).await.unwrap();
    assert_eq!(
        holder(&during),
        Some("op-a"),
        "the change was meant to precede the new election ({changed_after:?} after the kill)"
    );

    // Lease duration + one renew period + slack.
    let bound = Duration::from_secs(10);
    let after = eventually_within("op-b to take the Lease over", bound, || async {
        let spec = lease_spec(&env.client, &env.ns).await?;
        match holder(&spec) {
            Some("op-b") => Ok(spec),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let takeover = killed.elapsed();
    println!(
        "SIGKILL: op-b holds the Lease {takeover:?} after the kill (lease {LEASE_SECS} s; change made {changed_after:?} after the kill)"
    );
    assert!(takeover < bound, "takeover took {takeover:?}");
    assert_eq!(
        transitions(&after),
        transitions(&before) + 1,
        "before {before:?}, after {after:?}"
    );
    let acquired = after.acquire_time.clone().expect("acquireTime").0;

    // The new leader follows the change made while nobody led.
    let group = env
        .wait_group("orders-consumer", "Ready with 3 consumers", |g| {
            ready_with(g, 3)?;
            let replicas = g.status.as_ref().and_then(|s| s.desired_replicas);
            (replicas == Some(3))
                .then_some(())
                .ok_or_else(|| format!("desiredReplicas {replicas:?}"))
        })
        .await;
    let rebalanced = group
        .status
        .as_ref()
        .and_then(|s| s.last_rebalance_time.clone())
        .expect("lastRebalanceTime")
        .0;
    assert!(
        rebalanced.as_second() >= acquired.as_second(),
        "rebalanced at {rebalanced}, before op-b acquired the Lease at {acquired}"
    );
    let pod = env.api::<Pod>().get("orders-consumer-2").await.unwrap();
    assert_eq!(group_of(&pod).as_deref(), Some("orders-consumer"));
    assert!(queues_of(&pod).is_some(), "{pod:?}");
    eventually("a Rebalanced Event from op-b", || async {
        let events = events(&env.client, &env.ns).await;
        events
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Rebalanced")
                    && e.reporting_instance.as_deref() == Some("op-b")
            })
            .then_some(())
            .ok_or_else(|| describe_events(&events))
    })
    .await;
    assert_eq!(op_b.metric("rebalancer_leader", "").await, Some(1.0));
    op_b.assert_clean();
}

/// SIGTERM: the holder exits 0 and gives the Lease up on its way out, so the standby takes over
/// at its next try instead of waiting for the lease to expire.
#[tokio::test]
async fn sigterm_releases_the_lease_at_once() {
    let Some(env) = Env::new("ha-sigterm-release").await else {
        return;
    };
    let mut op_a = env.leader("op-a").await;
    let op_b = env.operator("op-b");
    wait_http(&op_b, "/readyz", 200).await;
    env.topic("orders", &ORDERS).await;
    env.pods("c", 1).await;
    env.group("g", selector_group("c")).await;
    env.wait_group("g", "Ready with 1 consumer", |g| ready_with(g, 1))
        .await;
    let before = lease_spec(&env.client, &env.ns).await.unwrap();
    assert_eq!(holder(&before), Some("op-a"), "{before:?}");

    let asked = Instant::now();
    let status = op_a
        .terminate()
        .expect("op-a did not exit within 15 s of SIGTERM");
    let exited = Instant::now();
    assert!(
        status.success(),
        "op-a exited with {status}:\n{}",
        op_a.logs()
    );
    // At its exit the Lease is no longer op-a's (an unreleased one would be for seconds more).
    let at_exit = lease_spec(&env.client, &env.ns).await.unwrap();
    assert_ne!(holder(&at_exit), Some("op-a"), "not released: {at_exit:?}");
    let bound = Duration::from_secs(2);
    let after = eventually_within("op-b to hold the released Lease", bound, || async {
        let spec = lease_spec(&env.client, &env.ns).await?;
        match holder(&spec) {
            Some("op-b") => Ok(spec),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let handover = exited.elapsed();
    println!(
        "SIGTERM: op-a exited {:?} after the signal; op-b held the Lease {handover:?} after the exit (lease {LEASE_SECS} s)",
        exited - asked
    );
    assert!(handover < bound, "hand-over took {handover:?}");
    assert_eq!(
        transitions(&after),
        transitions(&before) + 1,
        "before {before:?}, after {after:?}"
    );
    assert!(
        op_a.logs().contains("released the lease"),
        "{}",
        op_a.logs()
    );
    // The new holder writes: a new Ready pod joins the group.
    env.pod("c-1", json!({"app": "c"}), true).await;
    env.wait_group("g", "Ready with 2 consumers", |g| ready_with(g, 2))
        .await;
    op_a.assert_clean();
    op_b.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// Readiness.
// ---------------------------------------------------------------------------------------------

fn group_resource() -> ApiResource {
    ApiResource::erase::<ConsumerGroup>(&())
}

/// `/readyz` answers 200 only once the watch caches hold a full list. To hold one back
/// deterministically, the operator talks to the API server through a proxy that holds its
/// ConsumerGroup lists (not the start-up check's `limit=1` list, not watches) until released. An
/// operator that says "ready" before its caches synced answers 200 in that window.
#[tokio::test]
async fn readyz_waits_until_the_watch_caches_are_synced() {
    let Some(env) = Env::new("ha-readyz-sync").await else {
        return;
    };
    env.topic("orders", &ORDERS).await;
    env.pods("c", 2).await;
    env.group("g", selector_group("c")).await;
    let hold = Hold::new(|method, uri| {
        let query = uri.query().unwrap_or_default();
        method == "GET"
            && uri.path().ends_with("/consumergroups")
            && !query.contains("watch=")
            && !query.split('&').any(|p| p == "limit=1")
    });
    let proxy = CountingProxy::start_holding(&env, Some(hold.clone())).await;
    let started = Instant::now();
    let op = Operator::start(Launch {
        kubeconfig: &proxy.kubeconfig,
        lease_namespace: &env.ns,
        namespaces: vec![env.ns.clone()],
        identity: "op-r".into(),
        lease_duration: 4,
        log_dir: &env.dir,
        extra_args: Vec::new(),
    });
    // From the start until the lists are let through: /readyz never 200; /healthz 200 once it
    // serves.
    let window = Duration::from_secs(3);
    let mut unready_answers = 0;
    let mut healthy_since: Option<Instant> = None;
    loop {
        match op.http_get("/readyz").await {
            Ok((503, _)) => unready_answers += 1,
            Ok((code, body)) => panic!(
                "/readyz answered {code} {body:?} {:?} after start, before the ConsumerGroup list could complete\n{}",
                started.elapsed(),
                op.logs()
            ),
            Err(_) => assert!(healthy_since.is_none(), "/readyz stopped answering"),
        }
        if healthy_since.is_none() && matches!(op.http_get("/healthz").await, Ok((200, _))) {
            healthy_since = Some(Instant::now());
        }
        if healthy_since.is_some_and(|h| h.elapsed() > window) {
            break;
        }
        assert!(
            started.elapsed() < support::deadline(),
            "the operator never served /healthz:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(unready_answers > 0);
    assert!(hold.held() > 0, "no ConsumerGroup list was held");
    assert_eq!(
        op.http_get("/healthz").await.map(|(c, _)| c),
        Ok(200),
        "liveness must not depend on the sync"
    );
    // It leads, and still did not act on its partial caches.
    env.wait_holder("op-r").await;
    assert_eq!(env.get_group("g").await.status, None);

    // Released: the list completes, the caches sync, /readyz turns 200.
    hold.release();
    let released = Instant::now();
    wait_http(&op, "/readyz", 200).await;
    println!(
        "readyz: 200 {:?} after the lists were released",
        released.elapsed()
    );
    assert_eq!(op.http_get("/healthz").await.map(|(c, _)| c), Ok(200));
    env.wait_group("g", "Ready with 2 consumers", |g| ready_with(g, 2))
        .await;
    op.assert_clean();
}

/// An object the operator cannot read (a ConsumerGroup status with `idle` beyond u32: the CRD
/// declares `format: uint32` but the API server only enforces `minimum: 0`) stalls nothing: the
/// other groups of its kind are reconciled as usual, it gets a Warning Event `Unreadable` and no
/// write (its status and its pods' queues stay), and once fixed it is reconciled again. An
/// unreadable Topic fails its groups with `TopicUnreadable`.
#[tokio::test]
async fn an_unreadable_object_stalls_nothing_and_is_reported() {
    let Some(env) = Env::new("ha-unreadable").await else {
        return;
    };
    env.topic("orders", &ORDERS).await;
    env.pods("c", 2).await;
    env.pods("d", 2).await;
    env.group("g", selector_group("c")).await;
    let op = env.leader("op-u").await;
    env.wait_group("g", "Ready with 2 consumers", |g| ready_with(g, 2))
        .await;
    let before = env.get_group("g").await;
    let raw: Api<DynamicObject> =
        Api::namespaced_with(env.client.clone(), &env.ns, &group_resource());
    let corrupt = raw
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"idle": 5_000_000_000u64}})),
        )
        .await
        .expect("writing an unreadable status");
    assert_eq!(corrupt.data["status"]["idle"], json!(5_000_000_000u64));
    let warning = eventually("an Unreadable Warning about g", || async {
        let events = env.events_of("ConsumerGroup", "g").await;
        events
            .iter()
            .find(|(t, r, _)| t == "Warning" && r == "Unreadable")
            .map(|(_, _, note)| note.clone())
            .ok_or_else(|| format!("{events:?}"))
    })
    .await;
    assert!(warning.contains("5000000000"), "{warning}");

    // Another group of the same kind is served meanwhile.
    env.group("h", selector_group("d")).await;
    env.wait_group("h", "Ready with 2 consumers", |g| ready_with(g, 2))
        .await;
    // g was not written, and its pods kept their queues.
    let untouched = raw.get("g").await.unwrap();
    assert_eq!(untouched.data["status"]["idle"], json!(5_000_000_000u64));
    assert_eq!(
        untouched.data["status"]["assignments"],
        serde_json::to_value(&before.status.as_ref().unwrap().allocation.assignments).unwrap()
    );
    for pod in env.list_pods("app=c").await {
        assert_eq!(group_of(&pod).as_deref(), Some("g"), "{}", pod.name_any());
        assert!(queues_of(&pod).is_some(), "{}", pod.name_any());
    }

    // Fixed: reconciled again (a scale-down of its pods is followed).
    raw.patch_status(
        "g",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"idle": 0}})),
    )
    .await
    .expect("fixing the status");
    env.delete_pod("c-1").await;
    env.wait_group("g", "Ready with 1 consumer", |g| ready_with(g, 1))
        .await;

    // An unreadable Topic: its groups say so and keep their assignment.
    let topics: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.ns,
        &ApiResource::erase::<rebalancer::api::Topic>(&()),
    );
    topics
        .patch_status(
            "orders",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readQueues": 5_000_000_000u64}})),
        )
        .await
        .expect("writing an unreadable Topic status");
    let group = env
        .wait_group(
            "h",
            "Ready=False TopicUnreadable",
            |g| match support::fixtures::condition(g, "Ready") {
                Some(c) if c.status == "False" && c.reason == "TopicUnreadable" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    assert_eq!(group.status.as_ref().unwrap().allocation.consumers, 2);
    op.assert_clean();
}

// ---------------------------------------------------------------------------------------------
// The API server restarted under a running operator.
// ---------------------------------------------------------------------------------------------

/// One test's world on a server of its own (which it may restart), and the outages it caused.
struct OwnEnv {
    env: Env,
    /// From each stop of kube-apiserver until shortly after it was ready again.
    outages: Vec<(Timestamp, Timestamp)>,
}

impl std::ops::Deref for OwnEnv {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}

impl std::ops::DerefMut for OwnEnv {
    fn deref_mut(&mut self) -> &mut Env {
        &mut self.env
    }
}

impl OwnEnv {
    async fn start(test: &str) -> Option<OwnEnv> {
        Some(OwnEnv {
            env: Env::on_own_server(test).await?,
            outages: Vec::new(),
        })
    }

    /// Restarts kube-apiserver (same etcd, same port) — after a crash (SIGKILL) when `crash`,
    /// else SIGTERM — and takes a fresh admin client, so that no request of the test rides a
    /// connection of the old process. Returns the downtime.
    async fn restart_apiserver(&mut self, crash: bool) -> Duration {
        let started = Instant::now();
        let from = Timestamp::now();
        if crash {
            crash_apiserver(&self.server);
        }
        self.server
            .restart_apiserver()
            .await
            .unwrap_or_else(|e| panic!("restarting kube-apiserver: {e}"));
        self.outages
            .push((from, Timestamp::now() + SignedDuration::from_secs(2)));
        self.client = self.server.admin().await.expect("admin client");
        started.elapsed()
    }

    /// Waits up to `within` until `check` accepts the group; returns the time it took.
    async fn wait_group<F>(&self, name: &str, what: &str, within: Duration, check: F) -> Duration
    where
        F: Fn(&ConsumerGroup) -> Result<(), String>,
    {
        let started = Instant::now();
        let api = self.api::<ConsumerGroup>();
        eventually_within(&format!("group {name}: {what}"), within, || async {
            let group = api.get(name).await.map_err(|e| e.to_string())?;
            check(&group).map_err(|e| {
                format!(
                    "{e}; status {}",
                    serde_json::to_string(&group.status).unwrap_or_default()
                )
            })
        })
        .await;
        started.elapsed()
    }

    async fn wait_holder(&self, identity: &str) -> LeaseSpec {
        eventually(&format!("{identity} to hold the Lease"), || async {
            let spec = lease_spec(&self.client, &self.ns).await?;
            if holder(&spec) == Some(identity) {
                Ok(spec)
            } else {
                Err(format!("holder {:?}", spec.holder_identity))
            }
        })
        .await
    }
}

/// Bound on the operator's recovery after kube-apiserver is back.
const RECOVERY: Duration = Duration::from_secs(30);

/// Topic `orders` and group `g` over the Ready pods labelled `app: c` (`c-0`, `c-1`), converged
/// by `op-r`, which holds the Lease (returned).
async fn converged_group(own: &OwnEnv) -> LeaseSpec {
    let lease = own.wait_holder("op-r").await;
    own.apply::<rebalancer::api::Topic>(json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
        "metadata": {"name": "orders"},
        "spec": {"brokers": [
            {"name": "broker-a", "readQueues": 4, "writeQueues": 4},
            {"name": "broker-b", "readQueues": 4, "writeQueues": 4},
        ]}
    }))
    .await;
    own.pod("c-0", json!({"app": "c"}), true).await;
    own.pod("c-1", json!({"app": "c"}), true).await;
    own.apply::<ConsumerGroup>(group_with_strategy("Averagely"))
        .await;
    own.wait_group("g", "Ready with 2 consumers", support::deadline(), |g| {
        ready_with(g, 2)
    })
    .await;
    lease
}

fn group_with_strategy(strategy: &str) -> Value {
    let mut spec = selector_group("c");
    spec["strategy"] = strategy.into();
    json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": "g"}, "spec": spec
    })
}

/// [`Operator::assert_clean`] for a run that spans API server restarts: a kube-apiserver that
/// is starting answers 403 to everything for a moment, before its RBAC cache is filled (seen on
/// the Lease's renewal and on a reconcile's reads, which the operator retries). Refusals logged
/// during an outage (until 2 s after the server was ready) are tolerated; any other is not.
fn assert_clean_across_restarts(own: &OwnEnv, op: &Operator) {
    let logs = op.logs();
    assert!(
        !logs.contains("panicked"),
        "{} panicked:\n{logs}",
        op.identity
    );
    let refused: Vec<String> = op
        .forbidden_lines()
        .into_iter()
        .filter(|line| {
            let at = log_time(line);
            !own.outages
                .iter()
                .any(|(from, to)| at.is_some_and(|t| *from <= t && t <= *to))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "requests refused outside the API server's outages {:?}:\n{}",
        own.outages,
        refused.join("\n")
    );
}

/// The timestamp a log line starts with (after colour codes).
fn log_time(line: &str) -> Option<Timestamp> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain.split_whitespace().next()?.parse().ok()
}

/// The operator survived the restarts as the same process and the same Lease holder.
async fn assert_same_process_and_holder(own: &OwnEnv, op: &mut Operator, first: &LeaseSpec) {
    assert!(op.exited().is_none(), "the operator exited:\n{}", op.logs());
    assert_eq!(
        op.logs().matches("operator started").count(),
        1,
        "{}",
        op.logs()
    );
    let last = own.wait_holder(&op.identity).await;
    assert_eq!(
        transitions(&last),
        transitions(first),
        "the same replica keeps its Lease: {first:?} then {last:?}"
    );
}

/// SIGKILL to this test's own kube-apiserver (a crash: nothing served after it, unlike SIGTERM,
/// whose graceful shutdown keeps serving open connections for seconds). The process is found as
/// a child of this test process that serves the server's port.
fn crash_apiserver(server: &Server) {
    let port = server.url.rsplit(':').next().unwrap();
    let flag = format!("--secure-port={port}");
    let me = std::process::id();
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ours = ppid == Some(me)
            && args.first().is_some_and(|a| a.ends_with("kube-apiserver"))
            && args.contains(&flag);
        if ours {
            // SAFETY: plain syscall on a child of this process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    assert_eq!(killed, 1, "no kube-apiserver child serving port {port}");
}

/// kube-apiserver crashes right after a change, before the operator could write it (it plans
/// 0.5 s after an event), and is started again (same etcd, same port): the operator — the same
/// process — takes its Lease back and converges the pending change.
#[tokio::test]
async fn a_change_pending_across_an_api_server_crash_converges() {
    let Some(mut own) = OwnEnv::start("ha-apiserver-crash-pending").await else {
        return;
    };
    let mut op = own.operator("op-r");
    let first = converged_group(&own).await;

    own.pod("c-2", json!({"app": "c"}), true).await;
    let before: ConsumerGroup = own.api().get("g").await.unwrap();
    assert!(
        ready_with(&before, 2).is_ok(),
        "the change was meant to be pending at the crash: {:?}",
        before.status
    );
    let down = own.restart_apiserver(true).await;
    let at_restart: ConsumerGroup = own.api().get("g").await.unwrap();
    let pending = at_restart.status.as_ref().map(|s| s.allocation.consumers);
    let recovered = own
        .wait_group("g", "Ready with 3 consumers", RECOVERY, |g| {
            ready_with(g, 3)
        })
        .await;
    println!(
        "API server crash with a change pending: down {down:?}; consumers {pending:?} when it was back; converged {recovered:?} after that"
    );
    assert!(recovered < RECOVERY, "recovery took {recovered:?}");
    for pod in own.api::<Pod>().list(&ListParams::default()).await.unwrap() {
        assert_eq!(group_of(&pod).as_deref(), Some("g"), "{}", pod.name_any());
        assert!(
            queues_of(&pod).is_some(),
            "{} has no queues",
            pod.name_any()
        );
    }
    assert_same_process_and_holder(&own, &mut op, &first).await;
    assert_clean_across_restarts(&own, &op);
}

/// After kube-apiserver is back, changes reach the operator through its watches again within
/// [`RECOVERY`]: a spec change (only the ConsumerGroup watch carries it: observedGeneration
/// proves it) and then a new Ready pod (the pod watch).
#[tokio::test]
async fn watches_resume_promptly_after_an_api_server_restart() {
    let Some(mut own) = OwnEnv::start("ha-apiserver-restart-watch").await else {
        return;
    };
    let mut op = own.operator("op-r");
    let first = converged_group(&own).await;

    let down = own.restart_apiserver(false).await;
    let changed: ConsumerGroup = own.apply(group_with_strategy("AveragelyByCircle")).await;
    let generation = changed.metadata.generation;
    let spec_seen = own
        .wait_group("g", "the new spec observed", RECOVERY, |g| {
            ready_with(g, 2)?;
            let observed = g.status.as_ref().and_then(|s| s.observed_generation);
            (observed == generation)
                .then_some(())
                .ok_or_else(|| format!("observedGeneration {observed:?}, want {generation:?}"))
        })
        .await;
    own.pod("c-2", json!({"app": "c"}), true).await;
    let pod_seen = own
        .wait_group("g", "Ready with 3 consumers", RECOVERY, |g| {
            ready_with(g, 3)
        })
        .await;
    println!(
        "API server restart: down {down:?}; spec change observed {spec_seen:?} after it was back, then a new pod {pod_seen:?} after its creation"
    );
    assert!(spec_seen < RECOVERY, "spec change seen after {spec_seen:?}");
    assert_same_process_and_holder(&own, &mut op, &first).await;
    assert_clean_across_restarts(&own, &op);
}
