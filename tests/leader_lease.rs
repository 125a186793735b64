//! Leader election against a mocked API server: who may take the Lease, and the hand-over on
//! shutdown.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::client::Body;
use rebalancer::controller::leader::{Leadership, LeaseLock};
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

type Mock = Handle<Request<Body>, Response<Body>>;

fn lock() -> LeaseLock {
    LeaseLock {
        name: "rebalancer-leader".into(),
        namespace: "ops".into(),
        identity: "rebalancer-0".into(),
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    }
}

fn lease(holder: &str, renewed: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "rebalancer-leader", "namespace": "ops", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string(), "leaseTransitions": 3}
    })
}

async fn expect(
    handle: &mut Mock,
    method: Method,
    path: &str,
) -> (Value, SendResponse<Response<Body>>) {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    let bytes = http_body_util::BodyExt::collect(request.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

fn reply(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/rebalancer-leader";

fn setup() -> (Api<Lease>, kube::Client, Mock) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (Api::namespaced(client.clone(), "ops"), client, handle)
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let (api, _, mut handle) = setup();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, PATH).await;
        reply(
            send,
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        );
        let (body, send) = expect(
            &mut handle,
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
        )
        .await;
        assert_eq!(body["spec"]["holderIdentity"], "rebalancer-0");
        assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
        reply(send, StatusCode::CREATED, &body);
    });
    assert!(lock().try_acquire(&api).await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn respects_a_live_lease_and_takes_an_expired_one() {
    let (api, _, mut handle) = setup();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, PATH).await;
        reply(
            send,
            StatusCode::OK,
            &lease("rebalancer-1", Timestamp::now()),
        );
        // Expired: renewed a minute ago with a 15 s duration. Taken with the resourceVersion read.
        let (_, send) = expect(&mut handle, Method::GET, PATH).await;
        let old = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(60);
        reply(send, StatusCode::OK, &lease("rebalancer-1", old));
        let (body, send) = expect(&mut handle, Method::PUT, PATH).await;
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["spec"]["holderIdentity"], "rebalancer-0");
        assert_eq!(body["spec"]["leaseTransitions"], 4);
        reply(send, StatusCode::OK, &body);
    });
    let lock = lock();
    assert!(
        !lock.try_acquire(&api).await.unwrap(),
        "a live lease of another replica"
    );
    assert!(lock.try_acquire(&api).await.unwrap(), "an expired lease");
    server.await.unwrap();
}

#[tokio::test]
async fn release_hands_the_lease_over_and_stops_writes() {
    let (_, client, mut handle) = setup();
    let server = tokio::spawn(async move {
        let (_, send) = expect(&mut handle, Method::GET, PATH).await;
        reply(
            send,
            StatusCode::OK,
            &lease("rebalancer-0", Timestamp::now()),
        );
        let (body, send) = expect(&mut handle, Method::PUT, PATH).await;
        assert!(
            body["spec"]
                .get("holderIdentity")
                .is_none_or(Value::is_null),
            "{body}"
        );
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        reply(send, StatusCode::OK, &body);
    });
    let leadership = Leadership::always();
    lock().release(client, &leadership).await.unwrap();
    assert!(!leadership.is_leader());
    server.await.unwrap();
}
