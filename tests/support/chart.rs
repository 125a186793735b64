//! The chart's own RBAC on the test server: `helm template` (the real helm) renders
//! `charts/rebalancer`, its ServiceAccount, (Cluster)Roles and bindings are applied, and a token
//! for that ServiceAccount comes from TokenRequest. An operator run with it can do exactly what
//! an installed operator can do, and nothing more.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};

use super::envtest::{HARNESS_MANAGER, required};

/// Kinds of the rendered chart that make up its identity and permissions.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The helm binary: `$HELM`, else `helm` on the PATH; `None` (after a SKIP line) when there is
/// none and the suite may skip.
pub fn helm(test: &str) -> Option<PathBuf> {
    let candidate = std::env::var_os("HELM")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm"));
    let works = Command::new(&candidate)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(candidate);
    }
    if required() {
        panic!("no working helm ({}): set HELM", candidate.display());
    }
    println!("SKIP {test}: no helm binary (set HELM=/path/to/helm; .ci/run installs one)");
    None
}

/// The chart folder.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/rebalancer")
}

/// `helm template rebalancer charts/rebalancer --namespace NS ARGS...`, as YAML documents.
pub fn render(helm: &Path, namespace: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(helm)
        .args(["template", "rebalancer"])
        .arg(chart_dir())
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("running helm template");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).ok()?;
            (!v.is_null()).then_some(v)
        })
        .collect()
}

fn api_for(client: &Client, object: &serde_json::Value) -> Api<DynamicObject> {
    let api_version = object["apiVersion"].as_str().unwrap();
    let kind = object["kind"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None if kind.starts_with("Cluster") => Api::all_with(client.clone(), &resource),
        None => panic!("{kind} without a namespace in the rendered chart"),
    }
}

/// Applies every rendered object of [`RBAC_KINDS`] (server-side apply, admin client).
/// ServiceAccounts without a namespace get `namespace`.
pub async fn apply_rbac(client: &Client, namespace: &str, docs: &[serde_json::Value]) {
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !RBAC_KINDS.contains(&kind) {
            continue;
        }
        let mut doc = doc.clone();
        if !kind.starts_with("Cluster") && doc["metadata"]["namespace"].is_null() {
            doc["metadata"]["namespace"] = namespace.into();
        }
        let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        api_for(client, &doc)
            .patch(
                &object.name_any(),
                &PatchParams::apply(HARNESS_MANAGER).force(),
                &Patch::Apply(&doc),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {}: {e}", object.name_any()));
    }
}

/// The ServiceAccount name the chart renders.
pub fn service_account(docs: &[serde_json::Value]) -> String {
    docs.iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("the chart renders a ServiceAccount")
        .to_string()
}

/// A token for `namespace/name` from TokenRequest, valid for an hour.
pub async fn token(client: &Client, namespace: &str, name: &str) -> String {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
    answer
        .status
        .expect("TokenRequest answered no status")
        .token
}

/// Renders the chart with release namespace `namespace` (default values plus `args`), applies
/// its RBAC and returns a token for its ServiceAccount.
pub async fn install_rbac(client: &Client, helm: &Path, namespace: &str, args: &[&str]) -> String {
    let docs = render(helm, namespace, args);
    apply_rbac(client, namespace, &docs).await;
    token(client, namespace, &service_account(&docs)).await
}
