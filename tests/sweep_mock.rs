//! The orphan sweeper against a mocked API server: a pod labelled for a deleted group loses its
//! label and annotation; a pod of a live group, or any pod seen by a follower, causes no request.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use kube::runtime::{reflector, watcher};
use rebalancer::api::ConsumerGroup;
use rebalancer::controller::Context;
use rebalancer::controller::consumers::{GROUP_LABEL, QUEUES_ANNOTATION};
use rebalancer::controller::leader::Leadership;
use rebalancer::controller::metrics::Metrics;
use rebalancer::controller::sweep::{SweepContext, reconcile};
use serde_json::{Value, json};

fn pod(group: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "consumer-0", "namespace": "a",
            "labels": {GROUP_LABEL: group}, "annotations": {QUEUES_ANNOTATION: "[]"}}
    }))
    .unwrap()
}

fn setup(
    leadership: Leadership,
    live: &[&str],
) -> (
    Arc<SweepContext>,
    tower_test::mock::Handle<Request<Body>, Response<Body>>,
) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(Metrics::default()),
        leadership,
        None,
    ));
    let (groups, mut writer) = reflector::store::<ConsumerGroup>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for name in live {
        let g: ConsumerGroup = serde_json::from_value(json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": name, "namespace": "a"}, "spec": {"topics": ["t"]}
        }))
        .unwrap();
        writer.apply_watcher_event(&watcher::Event::InitApply(g));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let synced = tokio::sync::watch::channel(true).1;
    (
        Arc::new(SweepContext {
            ctx,
            groups,
            synced,
        }),
        handle,
    )
}

#[tokio::test]
async fn pod_of_a_deleted_group_is_cleaned() {
    let (sweep, mut handle) = setup(Leadership::always(), &["live"]);
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a patch");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/a/pods/consumer-0");
        assert!(
            request
                .uri()
                .query()
                .unwrap_or("")
                .contains("fieldManager=rebalancer")
        );
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            json!({"metadata": {"labels": {GROUP_LABEL: null}, "annotations": {QUEUES_ANNOTATION: null}}})
        );
        send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .body(Body::from(
                    serde_json::to_vec(&json!({"metadata": {"name": "consumer-0"}})).unwrap(),
                ))
                .unwrap(),
        );
        handle
    });
    reconcile(Arc::new(pod("gone")), sweep.clone())
        .await
        .unwrap();
    let mut handle = server.await.unwrap();
    drop(sweep);
    assert!(handle.next_request().await.is_none(), "one request only");
}

#[tokio::test]
async fn pod_of_a_live_group_and_followers_send_nothing() {
    for (leadership, group) in [
        (Leadership::always(), "live"),
        (Leadership::follower(), "gone"),
    ] {
        let (sweep, mut handle) = setup(leadership, &["live"]);
        reconcile(Arc::new(pod(group)), sweep.clone())
            .await
            .unwrap();
        drop(sweep);
        assert!(
            handle.next_request().await.is_none(),
            "no request for {group}"
        );
    }
}
