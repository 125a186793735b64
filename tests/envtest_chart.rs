//! `helm install` of `charts/rebalancer` against a real API server (envtest, kube-apiserver
//! 1.26): the release installs (default values, and `watchNamespaces`), the server holds the
//! objects the README describes, the RBAC it installs really permits what the operator does
//! (SelfSubjectAccessReview with a token of the chart's ServiceAccount) and no more, and
//! `helm uninstall` removes the release but leaves the CRDs.
//!
//! CRDs: the harness installs `crds/` first (server-side apply), as the README's install steps
//! do (`kubectl apply --server-side -f crds/`, then `helm install`). The default-values test runs
//! that `helm install` as written, *without* `--skip-crds`, and proves the CRDs keep their uid,
//! generation and spec through install and uninstall. Note that Helm 4 (the version `.ci/run`
//! pins) server-side applies `crds/` on install even when they exist: with identical content it
//! only becomes a co-owner of the fields (a `helm` field manager); with different content (CRDs
//! applied from another chart version) the install fails with an SSA conflict, and a later
//! `kubectl apply --server-side -f crds/` of changed CRDs conflicts with `helm` (so it needs
//! `--force-conflicts`). Uninstall never deletes them (asserted here). The `watchNamespaces`
//! test uses `--skip-crds`, the documented choice when the CRDs are managed separately, which
//! avoids all of that. Nothing runs the Deployment (no kubelet), so no `--wait`.

mod support;

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};

use support::envtest::{Server, shared};
use support::{chart, eventually, random_suffix};

const CRDS: [&str; 2] = ["topics.rebalancer.dev", "consumergroups.rebalancer.dev"];
const LEASE: &str = "rebalancer-leader";

/// One release under test.
struct Release {
    server: &'static Server,
    client: Client,
    helm: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
    /// Release name, unique per test.
    name: String,
    /// Release namespace.
    ns: String,
}

impl Release {
    /// A fresh release namespace and an admin kubeconfig; `None` when the suite skips.
    async fn new(test: &str) -> Option<Release> {
        let server = shared(test).await?;
        let helm = chart::helm(test)?;
        let client = server.admin().await.expect("admin client");
        let ns = server.namespace(&client, test).await;
        let kubeconfig = server.write_kubeconfig(&format!("{ns}-admin"), &server.admin_token);
        let home = server.scratch(&format!("{ns}-helm"));
        Some(Release {
            server,
            client,
            helm,
            kubeconfig,
            home,
            name: format!("rb-{}", random_suffix(5)),
            ns,
        })
    }

    /// The chart's fullname for this release (`<release>-rebalancer`).
    fn fullname(&self) -> String {
        format!("{}-rebalancer", self.name)
    }

    /// Name of the chart's cluster-scoped objects (`<namespace>-<fullname>`).
    fn cluster_name(&self) -> String {
        format!("{}-{}", self.ns, self.fullname())
    }

    /// Runs helm with the admin kubeconfig and the release namespace; panics on failure.
    fn helm(&self, args: &[&str]) -> String {
        let output = Command::new(&self.helm)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--namespace", &self.ns])
            // Keep helm's caches and config out of the user's home.
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .expect("running helm");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "helm {args:?} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn install(&self, extra: &[&str]) -> String {
        let chart = chart::chart_dir();
        let mut args = vec!["install", &self.name, chart.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.helm(&args)
    }

    /// `helm list -o json` entry of this release.
    fn listed(&self) -> Option<serde_json::Value> {
        let out = self.helm(&["list", "-o", "json"]);
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("helm list JSON");
        list.into_iter().find(|r| r["name"] == self.name.as_str())
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// A client holding a TokenRequest token of the chart's ServiceAccount.
    async fn operator_client(&self) -> Client {
        let token = chart::token(&self.client, &self.ns, &self.fullname()).await;
        self.server
            .client_for(&token)
            .await
            .expect("ServiceAccount client")
    }
}

/// `(uid, generation, spec)` of both CRDs. Not the resourceVersion: Helm 4 server-side applies
/// `crds/` on install even when they exist, which adds a `helm` field manager (metadata only)
/// when the content is the same.
async fn crd_versions(client: &Client) -> Vec<(String, Option<i64>, String)> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for name in CRDS {
        let crd = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("CRD {name}: {e}"));
        out.push((
            crd.uid().unwrap(),
            crd.metadata.generation,
            serde_json::to_string(&crd.spec).unwrap(),
        ));
    }
    out
}

/// One access the operator needs (or must not have).
#[derive(Clone, Copy, Debug)]
struct Access {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    name: &'static str,
}

const fn access(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
) -> Access {
    Access {
        verb,
        group,
        resource,
        subresource,
        name: "",
    }
}

/// What the operator does in every namespace it watches.
const WATCHED: [Access; 14] = [
    access("list", "rebalancer.dev", "consumergroups", ""),
    access("watch", "rebalancer.dev", "consumergroups", ""),
    access("get", "rebalancer.dev", "consumergroups", ""),
    access("patch", "rebalancer.dev", "consumergroups", "status"),
    access("list", "rebalancer.dev", "topics", ""),
    access("watch", "rebalancer.dev", "topics", ""),
    access("patch", "rebalancer.dev", "topics", "status"),
    access("list", "", "pods", ""),
    access("watch", "", "pods", ""),
    access("patch", "", "pods", ""),
    access("get", "apps", "deployments", "scale"),
    access("get", "apps", "statefulsets", "scale"),
    access("create", "", "events", ""),
    access("create", "events.k8s.io", "events", ""),
];

/// What the chart must not grant anywhere (least privilege).
const NEVER: [Access; 8] = [
    access("update", "rebalancer.dev", "consumergroups", ""),
    access("patch", "rebalancer.dev", "consumergroups", ""),
    access("delete", "rebalancer.dev", "topics", ""),
    access("create", "", "pods", ""),
    access("delete", "", "pods", ""),
    access("get", "", "secrets", ""),
    access("update", "apps", "deployments", "scale"),
    access("patch", "apps", "deployments", ""),
];

fn lease(verb: &'static str, name: &'static str) -> Access {
    Access {
        name,
        ..access(verb, "coordination.k8s.io", "leases", "")
    }
}

/// Asks the server, as `client`, whether `a` is allowed in `namespace` (`""`: cluster scope).
async fn allowed(client: &Client, namespace: &str, a: Access) -> bool {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: opt(namespace),
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(a.resource.into()),
                subresource: opt(a.subresource),
                name: opt(a.name),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    api.create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .expect("review status")
        .allowed
}

/// Collects every `(namespace, access)` whose answer is not `expected`.
async fn expect_access(
    client: &Client,
    namespace: &str,
    accesses: &[Access],
    expected: bool,
    wrong: &mut Vec<String>,
) {
    for &a in accesses {
        if allowed(client, namespace, a).await != expected {
            wrong.push(format!(
                "{a:?} in {namespace:?}: expected allowed={expected}"
            ));
        }
    }
}

/// Asserts the Deployment the chart installed and returns its container args.
async fn check_deployment(r: &Release) -> Vec<String> {
    let d = r.api::<Deployment>(&r.ns).get(&r.fullname()).await.unwrap();
    assert_eq!(
        d.annotations().get("meta.helm.sh/release-name"),
        Some(&r.name)
    );
    assert_eq!(
        d.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("Helm")
    );
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let selector = spec.selector.match_labels.unwrap();
    let template_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in &selector {
        assert_eq!(template_labels.get(k), Some(v), "pod template lacks {k}");
    }
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(&*r.fullname()));
    let c = &pod.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("ghcr.io/rebalancer-dev/rebalancer:0.1.0")
    );
    // The hardened pod the README promises.
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "{env:?}"
    );
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "run");
    for arg in [
        "--leader-elect".to_string(),
        format!("--lease-name={LEASE}"),
        format!("--lease-namespace={}", r.ns),
        "--metrics-addr=0.0.0.0:8080".to_string(),
    ] {
        assert!(args.contains(&arg), "{arg} missing from {args:?}");
    }

    // The metrics Service selects exactly these pods.
    let svc = r
        .api::<Service>(&r.ns)
        .get(&format!("{}-metrics", r.fullname()))
        .await
        .unwrap();
    let svc_spec = svc.spec.unwrap();
    assert_eq!(svc_spec.selector.as_ref(), Some(&selector));
    let port = &svc_spec.ports.unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("metrics"), 8080));

    // The ServiceAccount and the leader-election Role limited to the one Lease.
    r.api::<ServiceAccount>(&r.ns)
        .get(&r.fullname())
        .await
        .unwrap();
    let le = format!("{}-leader-election", r.fullname());
    let role = r.api::<Role>(&r.ns).get(&le).await.unwrap();
    let rules = role.rules.unwrap();
    assert!(
        rules
            .iter()
            .any(|x| x.resource_names == Some(vec![LEASE.to_string()])),
        "{rules:?}"
    );
    let binding = r.api::<RoleBinding>(&r.ns).get(&le).await.unwrap();
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str()),
        ("ServiceAccount", &*r.fullname())
    );
    args
}

/// The helm release record (a Secret) exists.
async fn release_secrets(r: &Release) -> usize {
    r.api::<Secret>(&r.ns)
        .list(&ListParams::default().labels(&format!("owner=helm,name={}", r.name)))
        .await
        .unwrap()
        .items
        .len()
}

/// Uninstalls, then asserts that the release's objects are gone and the CRDs are as before.
async fn uninstall(
    r: &Release,
    role_namespaces: &[&str],
    crds_before: &[(String, Option<i64>, String)],
) {
    let out = r.helm(&["uninstall", &r.name]);
    assert!(out.contains("uninstalled"), "{out}");
    assert!(r.listed().is_none(), "release still listed");
    let fullname = r.fullname();
    let cluster_name = r.cluster_name();
    eventually("the release's objects to be deleted", || async {
        let mut left = Vec::new();
        if r.api::<Deployment>(&r.ns)
            .get_opt(&fullname)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            left.push("Deployment".to_string());
        }
        if r.api::<ServiceAccount>(&r.ns)
            .get_opt(&fullname)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            left.push("ServiceAccount".to_string());
        }
        for ns in role_namespaces {
            if r.api::<Role>(ns)
                .get_opt(&fullname)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push(format!("Role in {ns}"));
            }
        }
        let crs: Api<ClusterRole> = Api::all(r.client.clone());
        for name in [cluster_name.clone(), format!("{cluster_name}-nodes")] {
            if crs
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                left.push(format!("ClusterRole {name}"));
            }
        }
        if release_secrets(r).await > 0 {
            left.push("release Secret".into());
        }
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("left: {left:?}"))
    })
    .await;
    assert_eq!(
        crd_versions(&r.client).await,
        crds_before,
        "helm uninstall touched the CRDs"
    );
}

#[tokio::test]
async fn helm_install_default_values() {
    let Some(r) = Release::new("chart-default").await else {
        return;
    };
    let crds_before = crd_versions(&r.client).await;
    // The README's command: no --skip-crds; the CRDs already exist.
    let out = r.install(&[]);
    assert!(out.contains("STATUS: deployed"), "{out}");

    let listed = r.listed().expect("release listed");
    assert_eq!(listed["status"], "deployed");
    assert_eq!(listed["namespace"], r.ns.as_str());
    assert_eq!(release_secrets(&r).await, 1);
    assert_eq!(
        crd_versions(&r.client).await,
        crds_before,
        "helm install changed the existing CRDs"
    );

    let args = check_deployment(&r).await;
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "all namespaces by default: {args:?}"
    );
    // All namespaces: one ClusterRole with the namespaced rules and nodes.
    let crs: Api<ClusterRole> = Api::all(r.client.clone());
    let cr = crs.get(&r.cluster_name()).await.unwrap();
    let resources: Vec<String> = cr
        .rules
        .unwrap()
        .into_iter()
        .flat_map(|x| x.resources.unwrap_or_default())
        .collect();
    for needed in ["consumergroups", "consumergroups/status", "pods", "nodes"] {
        assert!(resources.iter().any(|x| x == needed), "{resources:?}");
    }
    let crbs: Api<ClusterRoleBinding> = Api::all(r.client.clone());
    let crb = crbs.get(&r.cluster_name()).await.unwrap();
    let subject = &crb.subjects.unwrap()[0];
    assert_eq!(subject.namespace.as_deref(), Some(r.ns.as_str()));
    assert_eq!(subject.name, r.fullname());
    assert!(
        r.api::<Role>(&r.ns)
            .get_opt(&r.fullname())
            .await
            .unwrap()
            .is_none(),
        "no per-namespace Role without watchNamespaces"
    );

    // The installed RBAC, asked as the ServiceAccount.
    let op = r.operator_client().await;
    let elsewhere = r.server.namespace(&r.client, "chart-default-other").await;
    let mut wrong = Vec::new();
    for ns in [r.ns.as_str(), elsewhere.as_str(), ""] {
        expect_access(&op, ns, &WATCHED, true, &mut wrong).await;
        expect_access(&op, ns, &NEVER, false, &mut wrong).await;
    }
    let nodes = [
        access("get", "", "nodes", ""),
        access("list", "", "nodes", ""),
        access("watch", "", "nodes", ""),
    ];
    expect_access(&op, "", &nodes, true, &mut wrong).await;
    let lease_ok = [
        lease("get", LEASE),
        lease("update", LEASE),
        lease("patch", LEASE),
        lease("create", ""),
    ];
    expect_access(&op, &r.ns, &lease_ok, true, &mut wrong).await;
    let lease_denied = [lease("get", "other-lease"), lease("delete", LEASE)];
    expect_access(&op, &r.ns, &lease_denied, false, &mut wrong).await;
    expect_access(&op, &elsewhere, &lease_ok[..2], false, &mut wrong).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    uninstall(&r, &[], &crds_before).await;
}

#[tokio::test]
async fn helm_install_watch_namespaces() {
    let Some(r) = Release::new("chart-watch").await else {
        return;
    };
    let team_a = r.server.namespace(&r.client, "chart-watch-a").await;
    let team_b = r.server.namespace(&r.client, "chart-watch-b").await;
    let unwatched = r.server.namespace(&r.client, "chart-watch-other").await;
    let crds_before = crd_versions(&r.client).await;
    let watch = format!("watchNamespaces={{{team_a},{team_b}}}");
    let out = r.install(&["--skip-crds", "--set", &watch]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert_eq!(r.listed().expect("release listed")["status"], "deployed");

    let args = check_deployment(&r).await;
    let namespaces: Vec<&String> = args
        .iter()
        .filter(|a| a.starts_with("--namespace"))
        .collect();
    assert_eq!(
        namespaces,
        [
            &format!("--namespace={team_a}"),
            &format!("--namespace={team_b}")
        ],
        "{args:?}"
    );

    // A Role and RoleBinding per watched namespace; no all-namespaces ClusterRole, only nodes.
    for ns in [&team_a, &team_b] {
        let role = r.api::<Role>(ns).get(&r.fullname()).await.unwrap();
        let resources: Vec<String> = role
            .rules
            .unwrap()
            .into_iter()
            .flat_map(|x| x.resources.unwrap_or_default())
            .collect();
        assert!(
            resources.iter().any(|x| x == "consumergroups/status"),
            "{resources:?}"
        );
        let binding = r.api::<RoleBinding>(ns).get(&r.fullname()).await.unwrap();
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(subject.namespace.as_deref(), Some(r.ns.as_str()));
    }
    for ns in [&r.ns, &unwatched] {
        assert!(
            r.api::<Role>(ns)
                .get_opt(&r.fullname())
                .await
                .unwrap()
                .is_none(),
            "unexpected Role in {ns}"
        );
    }
    let crs: Api<ClusterRole> = Api::all(r.client.clone());
    assert!(crs.get_opt(&r.cluster_name()).await.unwrap().is_none());
    let nodes_role = crs
        .get(&format!("{}-nodes", r.cluster_name()))
        .await
        .unwrap();
    let rules = nodes_role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resources, Some(vec!["nodes".to_string()]));

    let op = r.operator_client().await;
    let mut wrong = Vec::new();
    for ns in [&team_a, &team_b] {
        expect_access(&op, ns, &WATCHED, true, &mut wrong).await;
        expect_access(&op, ns, &NEVER, false, &mut wrong).await;
    }
    // Neither the release namespace nor any other namespace, nor the cluster scope.
    for ns in [r.ns.as_str(), unwatched.as_str(), ""] {
        expect_access(&op, ns, &WATCHED, false, &mut wrong).await;
    }
    expect_access(
        &op,
        "",
        &[
            access("list", "", "nodes", ""),
            access("get", "", "nodes", ""),
        ],
        true,
        &mut wrong,
    )
    .await;
    expect_access(
        &op,
        &r.ns,
        &[
            lease("get", LEASE),
            lease("update", LEASE),
            lease("create", ""),
        ],
        true,
        &mut wrong,
    )
    .await;
    expect_access(&op, &team_a, &[lease("get", LEASE)], false, &mut wrong).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    uninstall(&r, &[&team_a, &team_b], &crds_before).await;
}
