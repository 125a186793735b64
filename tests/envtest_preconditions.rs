//! What the operator's writes rely on, checked on a real kube-apiserver: a server-side apply of
//! the status that names a resourceVersion is refused (409) once the object has moved on, so a
//! reconcile working from an old view cannot roll a newer status back.

mod support;

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use rebalancer::api::ConsumerGroup;
use serde_json::json;

#[tokio::test]
async fn a_status_apply_from_a_stale_view_is_refused() {
    let Some(server) =
        support::envtest::shared("a_status_apply_from_a_stale_view_is_refused").await
    else {
        return;
    };
    let client = server.admin().await.unwrap();
    let ns = server.namespace(&client, "stale-status").await;
    let api: Api<ConsumerGroup> = Api::namespaced(client, &ns);
    let group = json!({
        "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
        "metadata": {"name": "g"},
        "spec": {"topics": ["t"], "consumers": {"selector": {"matchLabels": {"app": "x"}}}}
    });
    let apply = PatchParams::apply("rebalancer").force();
    let old = api.patch("g", &apply, &Patch::Apply(&group)).await.unwrap();
    let status = |rv: Option<String>, idle: u32| {
        json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"resourceVersion": rv},
            "status": {"idle": idle}
        })
    };
    let fresh = api
        .patch_status(
            "g",
            &apply,
            &Patch::Apply(&status(old.resource_version(), 1)),
        )
        .await
        .expect("a status from the current view is written");
    assert_ne!(fresh.resource_version(), old.resource_version());

    let stale = api
        .patch_status(
            "g",
            &apply,
            &Patch::Apply(&status(old.resource_version(), 2)),
        )
        .await;
    match stale {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale status write must be refused with 409, got {other:?}"),
    }
    let now = api.get_status("g").await.unwrap();
    assert_eq!(
        now.status.unwrap().allocation.idle,
        1,
        "the newer status stays"
    );
}
