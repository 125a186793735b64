//! A seeded random state-transition test in the spirit of Acto (SOSP'23): random mutations of a
//! small world (pods, Topics, ConsumerGroups, operator replicas, the API server itself) against
//! the real `rebalancer` binary (two replicas, leader election, the chart's RBAC) and a real
//! kube-apiserver of its own (so it can restart it), checking after each step, within a bounded
//! wait, that the operator converged to the state an independent oracle predicts:
//!
//! 1. `status` equals `rebalancer plan -o json` for the inputs of the step (same Topic and
//!    ConsumerGroup objects as the server holds, the Ready selected pods as consumers, and the
//!    group as it was before the step as `--previous`, so `Sticky` and `movedQueues` are compared
//!    exactly too: the operator's own previous assignment is that status, since every step starts
//!    converged and quiet);
//! 2. in Clustering every readable queue is owned exactly once or listed as unassigned (in
//!    Broadcasting every consumer owns every readable queue);
//! 3. every consumer pod's `rebalancer.dev/queues` annotation equals its status entry, and no other
//!    pod carries the group's label;
//! 4. `status.observedGeneration` (and the Ready condition's) equals `metadata.generation`;
//! 5. `Ready` and `IdleConsumers` agree with the lists beside them;
//! 6. once converged, nothing is written for [`QUIET`] (group and pod resourceVersions).
//!
//! Besides: each step converges within [`CONVERGE_BOUND`]; the pods of a deleted group lose label
//! and annotation within it; a leader stopped by SIGTERM exits cleanly; no replica exits on its
//! own; no replica panics or is refused a request by the chart's RBAC.
//!
//! A step that makes the group unplannable (a missing topic, a selector the controller rejects,
//! no readable queue, Broadcasting without consumers) expects instead `Ready=False` with the
//! reason, and the last good assignment and annotations left in place.
//!
//! Hostile and odd input (issue #15), each run at least once in a default run (steps 3, 7, 11,
//! 15, 19 and 23 take one that has not run yet; the last line counts them):
//! - **full annotations** (`AddFiller`/`RemoveFiller`): a filler annotation fills a pod's
//!   annotations to 16 bytes short of the API server's 256 KiB limit, in place of its queues
//!   annotation. Every write of the queues annotation is then refused (422): a group that counts
//!   the pod as a consumer says `Ready=False` `WriteRejected`, naming the pod ("the API server
//!   refused ..."), its other pods are annotated as planned and its status is the plan all the
//!   same; invariant 3 is relaxed for that pod alone (it carries no queues annotation). Without
//!   the filler, back to normal.
//! - **contested pods** (`Contest`/`Uncontest`): a second group, [`RIVAL`], whose name has
//!   exactly 63 characters (a 64-character name is refused at admission, checked once at the
//!   start), selects the pods of another group. The first group that labelled a pod keeps it:
//!   a pod labelled by one of them before a step and still Ready keeps that label; every Ready
//!   pod of the app belongs to one of the two (which one labels a new pod is a race: the oracle
//!   takes the observed owners, and plans each group over its own); a group whose selected pods
//!   another group labelled says `PodsContested=True` naming them (else no `PodsContested=True`),
//!   and with no consumer left `Ready=False` `NoConsumers`. Invariant 6 shows there is no
//!   flip-flop.
//! - **a Topic at the limits** (`TopicAtLimit`): the Topics here are spec-only (no NameServers,
//!   so no `status.observed`): a broker gets 4,096 read and write queues, which must plan as any
//!   other layout, after 4,097 is refused at admission (422).
//!
//! `REBALANCER_RANDOM_SEED` replays a run, `REBALANCER_RANDOM_STEPS` sets its length,
//! `REBALANCER_RANDOM_LOGS=1` prints the replicas' logs at the end. Checks of known operator bugs
//! are listed in [`KNOWN_BUGS`]: they are reported, not enforced.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use rebalancer::api::{Allocation, ConsumerAssignment, ConsumerGroup, QueueRange, Topic};
use serde_json::{Value, json};
use support::envtest::HARNESS_MANAGER;
use support::fixtures::{Env, GROUP_LABEL, QUEUES_ANNOTATION};
use support::operator::Operator;

const TEST: &str = "envtest-random";

/// Checks that fail because of a known operator bug: `(invariant id, description)`. A violation
/// of one of these is printed (with the step that showed it) but does not fail the test. Remove
/// an entry to enforce the check again.
const KNOWN_BUGS: &[(&str, &str)] = &[];

/// Quiet window of invariant 6.
const QUIET: Duration = Duration::from_secs(2);
/// Longest a step may take to converge (invariant `slow-convergence`): a 500 ms debounce, and
/// after a SIGKILL a Lease that expires after 4 s and is polled every 4/3 s.
const CONVERGE_BOUND: Duration = Duration::from_secs(10);
/// How long after a restarted kube-apiserver reports ready it was seen to refuse some of the
/// operator's requests with 403 (up to ~15 s, for requests it granted before the restart and
/// grants again after): operator log lines with a 403 in that window are no finding.
const RBAC_WARMUP: SignedDuration = SignedDuration::from_secs(30);
/// The Lease the replicas share (the binary's default name).
const LEASE: &str = "rebalancer-leader";
/// A topic no test object ever creates.
const MISSING_TOPIC: &str = "no-such-topic";
/// The Clustering strategies that need no extra input.
const STRATEGIES: [&str; 4] = ["Averagely", "AveragelyByCircle", "ConsistentHash", "Sticky"];
/// Broker permissions, weighted.
const PERMISSIONS: [(&str, u32); 4] = [
    ("ReadWrite", 60),
    ("ReadOnly", 15),
    ("WriteOnly", 15),
    ("Deny", 10),
];
/// Most pods at a time.
const MAX_PODS: usize = 12;
/// The rival ConsumerGroup of a contest: a name of exactly 63 characters, the most a label value
/// (its pods' group label) takes.
const RIVAL: &str = "rival-group-whose-name-is-exactly-sixty-three-characters-long-x";
/// The annotation a hostile neighbour fills a pod's annotations with.
const FILLER: &str = "hostile.example/filler";
/// The API server's limit on a pod's annotations, keys and values together (256 KiB).
const ANNOTATIONS_LIMIT: usize = 256 * 1024;
/// What the filler leaves of [`ANNOTATIONS_LIMIT`]: less than the queues annotation takes even
/// empty (`rebalancer.dev/queues: []`, 23 bytes), so that every write of it is refused (422).
const FILLER_ROOM: usize = 16;
/// Queues of a broker at the Topic schema's (and the engine's) limit.
const QUEUES_LIMIT: u32 = 4096;
/// The hostile mutations, each made to run at least once in a default run (see `pick_kind`).
const HOSTILE: [Kind; 5] = [
    Kind::AddFiller,
    Kind::RemoveFiller,
    Kind::Contest,
    Kind::Uncontest,
    Kind::TopicAtLimit,
];

fn known(id: &str) -> bool {
    KNOWN_BUGS.iter().any(|(k, _)| *k == id)
}

// ---------------------------------------------------------------------------------------------
// PRNG

/// splitmix64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u32)]) -> T {
        let total: u32 = items.iter().map(|(_, w)| w).sum();
        let mut roll = (self.next() % u64::from(total)) as u32;
        for (item, w) in items {
            if roll < *w {
                return *item;
            }
            roll -= w;
        }
        unreachable!("weights add up")
    }
}

fn seed_from_env() -> u64 {
    if let Some(seed) = std::env::var("REBALANCER_RANDOM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return seed;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Keep it short enough to type.
    Rng(nanos).next() % 1_000_000_000
}

fn steps_from_env() -> usize {
    std::env::var("REBALANCER_RANDOM_STEPS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(24)
}

// ---------------------------------------------------------------------------------------------
// The model: what the test asked for.

#[derive(Clone, Debug)]
struct Broker {
    name: &'static str,
    read: u32,
    write: u32,
    permission: &'static str,
}

impl Broker {
    fn readable(&self) -> u32 {
        if matches!(self.permission, "ReadWrite" | "ReadOnly") {
            self.read
        } else {
            0
        }
    }
}

#[derive(Clone, Debug)]
struct TopicModel {
    name: &'static str,
    brokers: Vec<Broker>,
}

impl TopicModel {
    fn object(&self) -> Value {
        let brokers: Vec<Value> = self
            .brokers
            .iter()
            .map(|b| {
                json!({"name": b.name, "readQueues": b.read, "writeQueues": b.write,
                    "permission": b.permission})
            })
            .collect();
        json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "Topic",
            "metadata": {"name": self.name}, "spec": {"brokers": brokers}
        })
    }

    fn readable(&self) -> u32 {
        self.brokers.iter().map(Broker::readable).sum()
    }

    /// Every readable queue as `(topic, broker, id)`.
    fn queues(&self) -> Vec<(String, String, u32)> {
        self.brokers
            .iter()
            .flat_map(|b| {
                (0..b.readable()).map(|id| (self.name.to_string(), b.name.to_string(), id))
            })
            .collect()
    }
}

/// A spec the schema accepts and the controller rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Broken {
    /// One more topic, which does not exist.
    MissingTopic,
    /// A selector with an operator other than In/NotIn/Exists/DoesNotExist.
    BadOperator,
    /// A selector requirement `In` without values.
    InWithoutValues,
}

impl Broken {
    fn reason(self) -> &'static str {
        match self {
            Broken::MissingTopic => "TopicNotFound",
            Broken::BadOperator | Broken::InWithoutValues => "InvalidSelector",
        }
    }
}

#[derive(Clone, Debug)]
struct GroupModel {
    name: &'static str,
    /// Its consumers are the pods labelled `app: <app>`.
    app: &'static str,
    topics: Vec<&'static str>,
    strategy: &'static str,
    model: &'static str,
    broken: Option<Broken>,
}

impl GroupModel {
    fn object(&self) -> Value {
        let mut topics: Vec<&str> = self.topics.clone();
        if self.broken == Some(Broken::MissingTopic) {
            topics.push(MISSING_TOPIC);
        }
        let selector = match self.broken {
            Some(Broken::BadOperator) => json!({"matchExpressions": [
                {"key": "app", "operator": "Equals", "values": [self.app]}
            ]}),
            Some(Broken::InWithoutValues) => json!({"matchExpressions": [
                {"key": "app", "operator": "In"}
            ]}),
            _ => json!({"matchLabels": {"app": self.app}}),
        };
        json!({
            "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
            "metadata": {"name": self.name},
            "spec": {
                "topics": topics,
                "strategy": self.strategy,
                "messageModel": self.model,
                "consumers": {"selector": selector}
            }
        })
    }

    fn clustering(&self) -> bool {
        self.model == "Clustering"
    }

    fn describe(&self) -> String {
        format!(
            "{} topics={:?} {} {}{}",
            self.name,
            self.topics,
            self.strategy,
            self.model,
            self.broken
                .map(|b| format!(" broken={b:?}"))
                .unwrap_or_default()
        )
    }
}

#[derive(Clone, Debug)]
struct PodModel {
    app: &'static str,
    ready: bool,
}

struct World {
    topics: Vec<TopicModel>,
    groups: Vec<GroupModel>,
    pods: BTreeMap<String, PodModel>,
    next_pod: u32,
    /// Apps pods may have: the groups' and one nobody selects.
    apps: Vec<&'static str>,
    /// The pod whose annotations a filler fills up to the limit, if any (never one of a
    /// contested app).
    filler: Option<String>,
}

impl World {
    fn topic(&self, name: &str) -> &TopicModel {
        self.topics.iter().find(|t| t.name == name).unwrap()
    }

    /// Ready pods of `app`.
    fn consumers(&self, app: &str) -> BTreeSet<String> {
        self.pods
            .iter()
            .filter(|(_, p)| p.app == app && p.ready)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn group(&self, name: &str) -> &GroupModel {
        self.groups.iter().find(|g| g.name == name).unwrap()
    }

    fn group_mut(&mut self, name: &str) -> &mut GroupModel {
        self.groups.iter_mut().find(|g| g.name == name).unwrap()
    }

    /// The rival group, while a contest runs: it selects the pods of another group's app.
    fn rival(&self) -> Option<&GroupModel> {
        self.groups.iter().find(|g| g.name == RIVAL)
    }

    /// The app two groups select, while a contest runs.
    fn contested_app(&self) -> Option<&'static str> {
        self.rival().map(|r| r.app)
    }

    /// Pods a filler may be put on: of a group's app, not a contested one (a pod whose every
    /// write is refused and that two groups select would be counted by both: not modelled).
    fn filler_candidates(&self) -> Vec<String> {
        let contested = self.contested_app();
        self.pods
            .iter()
            .filter(|(_, p)| Some(p.app) != contested && self.groups.iter().any(|g| g.app == p.app))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Groups a rival may contest: not on the filler's app.
    fn contestable(&self) -> Vec<&'static str> {
        let filler_app = self
            .filler
            .as_ref()
            .and_then(|f| self.pods.get(f))
            .map(|p| p.app);
        self.groups
            .iter()
            .filter(|g| g.name != RIVAL && Some(g.app) != filler_app)
            .map(|g| g.name)
            .collect()
    }

    fn describe(&self) -> String {
        let topics: Vec<String> = self
            .topics
            .iter()
            .map(|t| {
                let b: Vec<String> = t
                    .brokers
                    .iter()
                    .map(|b| format!("{}:r{}w{}:{}", b.name, b.read, b.write, b.permission))
                    .collect();
                format!("{}[{}]", t.name, b.join(" "))
            })
            .collect();
        let groups: Vec<String> = self.groups.iter().map(GroupModel::describe).collect();
        let pods: Vec<String> = self
            .pods
            .iter()
            .map(|(n, p)| format!("{n}{}", if p.ready { "" } else { "(unready)" }))
            .collect();
        let filler = self
            .filler
            .as_ref()
            .map(|f| format!("; annotations of {f} filled"))
            .unwrap_or_default();
        format!(
            "topics {}; groups {}; pods {}{filler}",
            topics.join(", "),
            groups.join(" | "),
            pods.join(" ")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster: an API server of this test's own, with the chart's RBAC in one namespace.

struct Cluster {
    env: Env,
}

impl std::ops::Deref for Cluster {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.env
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Env {
        &mut self.env
    }
}

/// What the API holds of the world at one moment.
struct Observed {
    namespace: String,
    groups: BTreeMap<String, ConsumerGroup>,
    pods: BTreeMap<String, Pod>,
}

impl Cluster {
    /// A namespace with the chart's RBAC on a server of our own (this test restarts it). `None`
    /// after a SKIP line when the suite may skip here.
    async fn start(test: &str) -> Option<Cluster> {
        Some(Cluster {
            env: Env::on_own_server(test).await?,
        })
    }

    async fn apply<K>(&self, object: &Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let name = object["metadata"]["name"].as_str().unwrap();
        self.api::<K>()
            .patch(
                name,
                &PatchParams::apply(HARNESS_MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e}"));
    }

    async fn delete<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        self.api::<K>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
    }

    async fn holder(&self) -> Option<String> {
        let lease = self.api::<Lease>().get_opt(LEASE).await.ok().flatten()?;
        lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    }

    async fn observe(&self) -> Result<Observed, String> {
        let groups = self
            .api::<ConsumerGroup>()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing groups: {e}"))?;
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing pods: {e}"))?;
        Ok(Observed {
            namespace: self.ns.clone(),
            groups: groups
                .items
                .into_iter()
                .map(|g| (g.name_any(), g))
                .collect(),
            pods: pods.items.into_iter().map(|p| (p.name_any(), p)).collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// A group before a step: the object (None when it is new), and the pods labelled for it with
/// their annotation.
#[derive(Clone, Default)]
struct Before {
    group: Option<ConsumerGroup>,
    labelled: BTreeMap<String, Option<String>>,
}

fn before_of(obs: &Observed, name: &str) -> Before {
    Before {
        group: obs.groups.get(name).cloned(),
        labelled: labelled_for(obs, name),
    }
}

fn labelled_for(obs: &Observed, name: &str) -> BTreeMap<String, Option<String>> {
    obs.pods
        .iter()
        .filter(|(_, p)| p.labels().get(GROUP_LABEL).map(String::as_str) == Some(name))
        .map(|(n, p)| (n.clone(), p.annotations().get(QUEUES_ANNOTATION).cloned()))
        .collect()
}

enum Outcome {
    /// Planned: the status holds `allocation`, with `moved` queues.
    Good { allocation: Allocation, moved: u64 },
    /// Not plannable: Ready=False with `reason`, the last good status and annotations stay.
    Failed {
        reason: &'static str,
        keep: Allocation,
        keep_pods: BTreeMap<String, Option<String>>,
    },
}

struct Expect {
    group: GroupModel,
    consumers: BTreeSet<String>,
    /// Readable queues of each subscribed (existing) topic.
    readable: Vec<(String, u32)>,
    queues: Vec<(String, String, u32)>,
    outcome: Outcome,
    /// The consumer whose annotations are filled: every write of its queues is refused.
    refused: Option<String>,
}

/// One broken invariant: its id (see [`KNOWN_BUGS`]) and what was seen.
type Violation = (&'static str, String);

/// `0-3,8` -> [0, 1, 2, 3, 8]. The test's own parser, not the operator's.
fn ids(list: &str) -> Vec<u32> {
    list.split(',')
        .filter(|s| !s.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap(),
            None => {
                let v = part.parse::<u32>().unwrap();
                v..=v
            }
        })
        .collect()
}

fn expand(ranges: &[QueueRange]) -> Vec<(String, String, u32)> {
    ranges
        .iter()
        .flat_map(|r| {
            ids(&r.queue_ids)
                .into_iter()
                .map(|id| (r.topic.clone(), r.broker.clone(), id))
        })
        .collect()
}

/// The operator's notion of "the assignment changed": same non-empty owners, same length.
fn same_assignment(a: &[ConsumerAssignment], b: &[ConsumerAssignment]) -> bool {
    let key = |list: &[ConsumerAssignment]| -> BTreeMap<String, Vec<QueueRange>> {
        list.iter()
            .filter(|c| !c.queues.is_empty())
            .map(|c| {
                let mut q = c.queues.clone();
                q.sort();
                (c.consumer.clone(), q)
            })
            .collect()
    };
    key(a) == key(b) && a.len() == b.len()
}

fn condition<'a>(group: &'a ConsumerGroup, type_: &str) -> Option<&'a Condition> {
    group
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Runs `rebalancer plan -f <topics> -f <group> --consumers .. -o json [--previous ..]`.
fn run_plan(
    dir: &Path,
    tag: &str,
    topics: &[Topic],
    group: &ConsumerGroup,
    consumers: &BTreeSet<String>,
    previous: Option<&ConsumerGroup>,
) -> Result<Allocation, String> {
    let strip = |v: Value| -> Value {
        let mut v = v;
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        v
    };
    let topics_file = dir.join(format!("{tag}-topics.yaml"));
    let text: Vec<String> = topics
        .iter()
        .map(|t| serde_yaml::to_string(&strip(serde_json::to_value(t).unwrap())).unwrap())
        .collect();
    std::fs::write(&topics_file, text.join("---\n")).unwrap();
    let group_file = dir.join(format!("{tag}-group.yaml"));
    std::fs::write(
        &group_file,
        serde_yaml::to_string(&strip(serde_json::to_value(group).unwrap())).unwrap(),
    )
    .unwrap();
    let mut command = std::process::Command::new(support::operator::binary());
    command
        .arg("plan")
        .arg("-f")
        .arg(&topics_file)
        .arg("-f")
        .arg(&group_file)
        .arg("--consumers")
        .arg(consumers.iter().cloned().collect::<Vec<_>>().join(","))
        .args(["-o", "json"]);
    if let Some(previous) = previous {
        let file = dir.join(format!("{tag}-previous.json"));
        std::fs::write(&file, serde_json::to_string_pretty(previous).unwrap()).unwrap();
        command.arg("--previous").arg(file);
    }
    let out = command.output().expect("running rebalancer plan");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("plan -o json: {e}"))
}

/// What the operator must converge to for `g`, from the world after the step and the group
/// before it. `owners` holds the group label of each pod of the contested app, as observed: which
/// of two groups labels a new pod first is a race, but whoever did keeps it, and is alone to
/// count it as a consumer.
async fn expect(
    cluster: &Cluster,
    world: &World,
    g: &GroupModel,
    before: &Before,
    tag: &str,
    owners: &Owners,
) -> Result<Expect, String> {
    let mut consumers = world.consumers(g.app);
    if world.contested_app() == Some(g.app) {
        consumers.retain(|p| owners.get(p).cloned().flatten().as_deref() == Some(g.name));
    }
    let refused = world
        .filler
        .clone()
        .filter(|f| g.broken.is_none() && consumers.contains(f));
    let readable: Vec<(String, u32)> = g
        .topics
        .iter()
        .map(|t| (t.to_string(), world.topic(t).readable()))
        .collect();
    let queues: Vec<(String, String, u32)> = g
        .topics
        .iter()
        .flat_map(|t| world.topic(t).queues())
        .collect();
    let status = before.group.as_ref().and_then(|o| o.status.clone());
    let failed = |reason: &'static str| Outcome::Failed {
        reason,
        keep: status.clone().map(|s| s.allocation).unwrap_or_default(),
        keep_pods: before.labelled.clone(),
    };
    // The operator's movedQueues: kept from the last rebalance when the owners did not change.
    let moved = |assignments: &[ConsumerAssignment], planned: u64| match &status {
        Some(s)
            if s.last_rebalance_time.is_some()
                && same_assignment(&s.allocation.assignments, assignments) =>
        {
            s.allocation.moved_queues
        }
        _ => planned,
    };
    let outcome = if let Some(b) = g.broken {
        failed(b.reason())
    } else if consumers.is_empty() {
        if g.clustering() {
            // Nobody to assign to: an empty allocation, not an error (plan refuses no consumers):
            // the plan layer's own empty allocation, every readable queue unassigned.
            let mut inputs = Vec::new();
            for t in &g.topics {
                let topic = cluster
                    .api::<Topic>()
                    .get(t)
                    .await
                    .expect("reading a topic");
                inputs.push(rebalancer::plan::topic_input(&topic));
            }
            let released = status
                .as_ref()
                .map_or(0, |s| rebalancer::plan::owned_queue_count(&s.allocation));
            Outcome::Good {
                allocation: rebalancer::plan::empty_allocation(&inputs, released),
                moved: moved(&[], released),
            }
        } else {
            // Broadcasting with nobody: the engine gives everyone (nobody) every queue; the
            // plan layer says what that status is (plan's command line takes no empty list).
            let mut topics = Vec::new();
            for t in &g.topics {
                topics.push(
                    cluster
                        .api::<Topic>()
                        .get(t)
                        .await
                        .expect("reading a topic"),
                );
            }
            let object = cluster
                .api::<ConsumerGroup>()
                .get(g.name)
                .await
                .expect("reading the group");
            let allocation = rebalancer::plan::plan_group(
                &object.spec,
                true,
                |n| topics.iter().find(|t| t.name_any() == n),
                &[],
                None,
            )
            .map_err(|e| format!("planning an empty Broadcasting group: {e}"))?;
            Outcome::Good {
                moved: moved(&[], allocation.moved_queues),
                allocation,
            }
        }
    } else {
        let mut topics = Vec::new();
        for t in &g.topics {
            topics.push(
                cluster
                    .api::<Topic>()
                    .get(t)
                    .await
                    .expect("reading a topic"),
            );
        }
        let object = cluster
            .api::<ConsumerGroup>()
            .get(g.name)
            .await
            .expect("reading the group");
        // The operator plans against the status in force, when it lists assignments.
        let previous = before.group.as_ref().filter(|_| {
            status
                .as_ref()
                .is_some_and(|s| !s.allocation.assignments.is_empty())
        });
        match run_plan(&cluster.dir, tag, &topics, &object, &consumers, previous) {
            Ok(allocation) => {
                let m = moved(&allocation.assignments, allocation.moved_queues);
                Outcome::Good {
                    allocation,
                    moved: m,
                }
            }
            // The only refusal the world can cause with consumers present.
            Err(_) if readable.iter().any(|(_, q)| *q == 0) => failed("NoReadableQueues"),
            Err(e) => {
                return Err(format!(
                    "rebalancer plan failed for group {} although every topic has readable queues: {e}",
                    g.name
                ));
            }
        }
    };
    // Nothing is written for a failing group: no refusal either.
    let refused = refused.filter(|_| matches!(outcome, Outcome::Good { .. }));
    Ok(Expect {
        group: g.clone(),
        consumers,
        readable,
        queues,
        outcome,
        refused,
    })
}

/// Every invariant of every group against one observation.
fn check(expects: &[Expect], groups: &[&'static str], obs: &Observed) -> Vec<Violation> {
    let mut out = Vec::new();
    for e in expects {
        check_group(e, obs, &mut out);
    }
    for (name, pod) in &obs.pods {
        let label = pod.labels().get(GROUP_LABEL);
        match label {
            Some(g) if !groups.contains(&g.as_str()) => out.push((
                "sweep",
                format!("pod {name} still carries the label of deleted group {g}"),
            )),
            None if pod.annotations().contains_key(QUEUES_ANNOTATION) => out.push((
                "labels",
                format!("pod {name} has a queues annotation but no group label"),
            )),
            _ => {}
        }
    }
    out
}

/// Pod name -> its group label, for the pods of the contested app.
type Owners = BTreeMap<String, Option<String>>;

/// The pods of the contested app and their group labels: what the expectations of a contest are
/// computed for (empty without a contest).
fn owners_of(world: &World, obs: &Observed) -> Owners {
    let Some(app) = world.contested_app() else {
        return BTreeMap::new();
    };
    obs.pods
        .iter()
        .filter(|(_, p)| p.labels().get("app").map(String::as_str) == Some(app))
        .map(|(n, p)| (n.clone(), p.labels().get(GROUP_LABEL).cloned()))
        .collect()
}

/// While two groups select the same pods: a pod one of them labelled before the step and that is
/// still Ready keeps that label (the first that labelled it keeps it: no flip-flop), and unless
/// both groups fail, every Ready pod of the app belongs to one of them.
fn check_contest(
    world: &World,
    expects: &[Expect],
    before: &BTreeMap<&'static str, Before>,
    obs: &Observed,
) -> Vec<Violation> {
    let mut out = Vec::new();
    let Some(app) = world.contested_app() else {
        return out;
    };
    let pair: Vec<&Expect> = expects.iter().filter(|e| e.group.app == app).collect();
    let label = |pod: &str| {
        obs.pods
            .get(pod)
            .and_then(|p| p.labels().get(GROUP_LABEL).cloned())
    };
    let ready = |pod: &str| world.pods.get(pod).is_some_and(|p| p.ready);
    for e in &pair {
        let Some(b) = before.get(e.group.name) else {
            continue;
        };
        for pod in b.labelled.keys() {
            if ready(pod) && label(pod).as_deref() != Some(e.group.name) {
                out.push((
                    "contested",
                    format!(
                        "pod {pod} belonged to group {} before the step and is still Ready, but now carries {:?}",
                        e.group.name,
                        label(pod)
                    ),
                ));
            }
        }
    }
    if pair
        .iter()
        .any(|e| matches!(e.outcome, Outcome::Good { .. }))
    {
        for (pod, p) in &world.pods {
            let owner = label(pod);
            if p.app == app
                && p.ready
                && !pair.iter().any(|e| owner.as_deref() == Some(e.group.name))
            {
                out.push((
                    "contested",
                    format!(
                        "Ready pod {pod} of contested app {app} belongs to no group ({owner:?})"
                    ),
                ));
            }
        }
    }
    out
}

fn check_group(e: &Expect, obs: &Observed, out: &mut Vec<Violation>) {
    let name = e.group.name;
    let Some(group) = obs.groups.get(name) else {
        out.push(("plan", format!("group {name} does not exist")));
        return;
    };
    let Some(status) = group.status.as_ref() else {
        out.push(("plan", format!("group {name} has no status")));
        return;
    };
    let generation = group.metadata.generation;
    if status.observed_generation != generation {
        out.push((
            "generation",
            format!(
                "group {name}: status.observedGeneration {:?}, metadata.generation {generation:?}",
                status.observed_generation
            ),
        ));
    }
    let ready = condition(group, "Ready");
    if let Some(c) = ready
        && c.observed_generation != generation
    {
        out.push((
            "generation",
            format!(
                "group {name}: Ready.observedGeneration {:?}, metadata.generation {generation:?}",
                c.observed_generation
            ),
        ));
    }
    let pod_state = |pod: &Pod| {
        (
            pod.labels().get(GROUP_LABEL).cloned(),
            pod.annotations().get(QUEUES_ANNOTATION).cloned(),
        )
    };
    match &e.outcome {
        Outcome::Failed {
            reason,
            keep,
            keep_pods,
        } => {
            match ready {
                Some(c) if c.status == "False" && c.reason == *reason => {}
                other => out.push((
                    "ready-condition",
                    format!(
                        "group {name}: want Ready=False reason {reason}, got {:?}",
                        other.map(|c| (&c.status, &c.reason, &c.message))
                    ),
                )),
            }
            if status.allocation != *keep {
                out.push((
                    "last-good",
                    format!(
                        "group {name}: the last good allocation changed while failing:\n  kept {}\n  now  {}",
                        serde_json::to_string(keep).unwrap(),
                        serde_json::to_string(&status.allocation).unwrap()
                    ),
                ));
            }
            for (pod_name, pod) in &obs.pods {
                let (label, annotation) = pod_state(pod);
                let ours = label.as_deref() == Some(name);
                match keep_pods.get(pod_name) {
                    Some(kept) if !ours || annotation != *kept => out.push((
                        "last-good",
                        format!(
                            "group {name} failing: pod {pod_name} had {kept:?}, now label {label:?} annotation {annotation:?}"
                        ),
                    )),
                    None if ours => out.push((
                        "last-good",
                        format!("group {name} failing: pod {pod_name} joined it ({annotation:?})"),
                    )),
                    _ => {}
                }
            }
        }
        Outcome::Good { allocation, moved } => {
            // A group nobody consumes says so (Ready=False NoConsumers), planned all the same.
            let (want_status, want_reason, want) = if allocation.consumers == 0 {
                (
                    "False",
                    "NoConsumers",
                    format!(
                        "no Ready consumer pod: {} queues consumed by nobody",
                        allocation.queues
                    ),
                )
            } else {
                (
                    "True",
                    "Rebalanced",
                    format!(
                        "{} consumers, {} queues",
                        allocation.consumers, allocation.queues
                    ),
                )
            };
            match (ready, &e.refused) {
                // The filled pod's write is refused: Ready=False WriteRejected naming it, the
                // rest planned and written as usual.
                (Some(c), Some(pod)) => {
                    if !(c.status == "False"
                        && c.reason == "WriteRejected"
                        && c.message.starts_with("the API server refused")
                        && c.message
                            .contains(&format!("pod {}/{pod} (422", obs.namespace)))
                    {
                        out.push((
                            "write-rejected",
                            format!(
                                "group {name}: the annotations of consumer {pod} are full: want Ready=False WriteRejected naming it (422), got {:?}",
                                (&c.status, &c.reason, &c.message)
                            ),
                        ));
                    }
                }
                (None, Some(pod)) => out.push((
                    "write-rejected",
                    format!(
                        "group {name}: no Ready condition (consumer {pod} has full annotations)"
                    ),
                )),
                (Some(c), None) if c.status == want_status && c.reason == want_reason => {
                    if c.message != want {
                        out.push((
                            "ready-condition",
                            format!("group {name}: Ready message {:?}, want {want:?}", c.message),
                        ));
                    }
                }
                (other, None) => out.push((
                    "ready-condition",
                    format!(
                        "group {name}: want Ready={want_status} {want_reason}, got {:?}",
                        other.map(|c| (&c.status, &c.reason, &c.message))
                    ),
                )),
            }
            // Pods of its app another group labelled are named in PodsContested.
            let contested: Vec<String> = obs
                .pods
                .iter()
                .filter_map(|(n, p)| {
                    let owner = p.labels().get(GROUP_LABEL)?;
                    (p.labels().get("app").map(String::as_str) == Some(e.group.app)
                        && owner != name)
                        .then(|| format!("{n} ({owner})"))
                })
                .collect();
            let pods_contested = condition(group, "PodsContested");
            if contested.is_empty() {
                if let Some(c) = pods_contested.filter(|c| c.status != "False") {
                    out.push((
                        "contested",
                        format!(
                            "group {name}: no selected pod belongs to another group, but PodsContested is {:?}",
                            (&c.status, &c.reason, &c.message)
                        ),
                    ));
                }
            } else {
                let names = |c: &Condition| {
                    c.message
                        .starts_with(&format!("{} selected pods", contested.len()))
                        && contested.iter().take(10).all(|n| c.message.contains(n))
                };
                if !pods_contested.is_some_and(|c| c.status == "True" && names(c)) {
                    out.push((
                        "contested",
                        format!(
                            "group {name}: want PodsContested=True naming {contested:?}, got {:?}",
                            pods_contested.map(|c| (&c.status, &c.reason, &c.message))
                        ),
                    ));
                }
            }
            // 1. status == plan.
            let mut got = status.allocation.clone();
            let mut want = allocation.clone();
            let (got_moved, want_moved) = (got.moved_queues, *moved);
            got.moved_queues = 0;
            want.moved_queues = 0;
            if got != want {
                out.push((
                    "plan",
                    format!(
                        "group {name}: status differs from `rebalancer plan`:\n  plan   {}\n  status {}",
                        serde_json::to_string(&want).unwrap(),
                        serde_json::to_string(&got).unwrap()
                    ),
                ));
            } else if got_moved != want_moved {
                out.push((
                    "moved",
                    format!("group {name}: movedQueues {got_moved}, want {want_moved}"),
                ));
            }
            // 2. ownership, from the test's own model of the topics.
            check_ownership(e, status, out);
            // 3. annotations and labels.
            let entries: BTreeMap<&str, &Vec<QueueRange>> = status
                .allocation
                .assignments
                .iter()
                .map(|a| (a.consumer.as_str(), &a.queues))
                .collect();
            for (pod_name, pod) in &obs.pods {
                let (label, annotation) = pod_state(pod);
                let ours = label.as_deref() == Some(name);
                if e.consumers.contains(pod_name) {
                    let Some(entry) = entries.get(pod_name.as_str()) else {
                        out.push((
                            "plan",
                            format!("group {name}: consumer {pod_name} has no status entry"),
                        ));
                        continue;
                    };
                    if e.refused.as_ref() == Some(pod_name) {
                        // Relaxed for the pod whose annotations are full: its queues annotation
                        // (removed with the filler's arrival) cannot be written.
                        if annotation.is_some() {
                            out.push((
                                "write-rejected",
                                format!(
                                    "group {name}: consumer {pod_name} has full annotations, yet a queues annotation {annotation:?}"
                                ),
                            ));
                        }
                        continue;
                    }
                    let parsed: Option<Vec<QueueRange>> = annotation
                        .as_deref()
                        .and_then(|a| serde_json::from_str(a).ok());
                    if !ours || parsed.as_ref() != Some(*entry) {
                        out.push((
                            "annotations",
                            format!(
                                "group {name}: consumer {pod_name} has label {label:?} annotation {annotation:?}, status says {}",
                                serde_json::to_string(entry).unwrap()
                            ),
                        ));
                    }
                } else if ours {
                    out.push((
                        "labels",
                        format!("group {name}: pod {pod_name} is not a consumer but carries the label ({annotation:?})"),
                    ));
                }
            }
            // 5. IdleConsumers agrees with the lists.
            let idle = condition(group, "IdleConsumers");
            if e.group.clustering() {
                let count = e.consumers.len() as u32;
                let per_topic = e.readable.iter().any(|(_, q)| count > *q);
                let want = !status.allocation.idle_consumers.is_empty() || per_topic;
                let got = idle.map(|c| c.status == "True");
                if got != Some(want) {
                    out.push((
                        "idle-condition",
                        format!(
                            "group {name} ({}): IdleConsumers {:?} but idleConsumers {:?}, {count} consumers, readable {:?}",
                            e.group.strategy,
                            idle.map(|c| (&c.status, &c.reason, &c.message)),
                            status.allocation.idle_consumers,
                            e.readable
                        ),
                    ));
                }
            } else if !idle.is_some_and(|c| c.status == "False" && c.reason == "Broadcasting") {
                out.push((
                    "idle-condition",
                    format!(
                        "group {name} (Broadcasting): IdleConsumers {:?}",
                        idle.map(|c| (&c.status, &c.reason))
                    ),
                ));
            }
        }
    }
}

/// Invariant 2, from the test's own model of the topics (not from `plan`).
fn check_ownership(
    e: &Expect,
    status: &rebalancer::api::ConsumerGroupStatus,
    out: &mut Vec<Violation>,
) {
    let name = e.group.name;
    let a = &status.allocation;
    let owners: BTreeSet<&str> = a.assignments.iter().map(|c| c.consumer.as_str()).collect();
    let want: BTreeSet<&str> = e.consumers.iter().map(String::as_str).collect();
    if owners != want {
        out.push((
            "ownership",
            format!("group {name}: assignments list {owners:?}, Ready consumers are {want:?}"),
        ));
    }
    let readable: BTreeSet<&(String, String, u32)> = e.queues.iter().collect();
    if e.group.clustering() {
        let mut count: BTreeMap<(String, String, u32), u32> = BTreeMap::new();
        for c in &a.assignments {
            for q in expand(&c.queues) {
                *count.entry(q).or_default() += 1;
            }
        }
        let unassigned = expand(&a.unassigned_queues);
        for q in &unassigned {
            *count.entry(q.clone()).or_default() += 1;
        }
        let mut problems = Vec::new();
        for q in &readable {
            match count.get(*q) {
                Some(1) => {}
                n => problems.push(format!(
                    "{}/{}:{} listed {} times",
                    q.0,
                    q.1,
                    q.2,
                    n.unwrap_or(&0)
                )),
            }
        }
        for q in count.keys() {
            if !readable.contains(q) {
                problems.push(format!("{}/{}:{} is not a readable queue", q.0, q.1, q.2));
            }
        }
        if !problems.is_empty() {
            // An empty group (no consumer) lists its queues nowhere: a separate id, so that it can
            // be told apart from a double assignment.
            let id = if e.consumers.is_empty() {
                "empty-unassigned"
            } else {
                "ownership"
            };
            out.push((
                id,
                format!(
                    "group {name} ({}, {} consumers, status queues {}, unassignedQueues {:?}): every readable queue must be owned once or unassigned: {}",
                    e.group.strategy,
                    e.consumers.len(),
                    a.queues,
                    a.unassigned_queues,
                    problems.join("; ")
                ),
            ));
        }
    } else {
        for c in &a.assignments {
            let owned: BTreeSet<(String, String, u32)> = expand(&c.queues).into_iter().collect();
            let all: BTreeSet<(String, String, u32)> = e.queues.iter().cloned().collect();
            if owned != all {
                out.push((
                    "ownership",
                    format!(
                        "group {name} (Broadcasting): {} owns {} of {} readable queues",
                        c.consumer,
                        owned.len(),
                        all.len()
                    ),
                ));
            }
        }
        if !a.unassigned_queues.is_empty() {
            out.push((
                "ownership",
                format!(
                    "group {name} (Broadcasting): unassigned {:?}",
                    a.unassigned_queues
                ),
            ));
        }
    }
}

fn format_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|(id, what)| format!("\n  [{id}] {what}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The run.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AddPod,
    DeletePod,
    FlipReady,
    TopicQueues,
    Strategy,
    Model,
    GroupTopics,
    Break,
    Repair,
    Recreate,
    KillLeader,
    TermLeader,
    RestartApiServer,
    /// A filler annotation fills a consumer pod's annotations to the limit.
    AddFiller,
    RemoveFiller,
    /// A second group ([`RIVAL`]) selects the pods of a group.
    Contest,
    Uncontest,
    /// A broker of a Topic at 4,096 queues (4,097 refused at admission).
    TopicAtLimit,
}

struct Run {
    seed: u64,
    steps: usize,
    rng: Rng,
    world: World,
    /// Before `cluster`: fields drop in order, and a replica prints its log (in the server's
    /// folder) when dropped during a panic.
    live: Vec<Operator>,
    retired: Vec<Operator>,
    cluster: Cluster,
    /// When kube-apiserver was down or just back: `(from, to)`.
    restarts: Vec<(Timestamp, Timestamp)>,
    /// The step of the last kube-apiserver restart.
    restart_step: Option<usize>,
    next_identity: u32,
    history: Vec<String>,
    /// Known bugs seen: id -> (first step, what).
    seen: RefCell<BTreeMap<&'static str, (usize, String)>>,
    counts: BTreeMap<String, usize>,
}

impl Run {
    fn context(&self, step: usize) -> String {
        let history: String = self
            .history
            .iter()
            .enumerate()
            .map(|(i, h)| format!("\n  {i:>2}: {h}"))
            .collect();
        format!(
            "seed={seed} step={step}/{steps}\nreplay: REBALANCER_RANDOM_SEED={seed} REBALANCER_RANDOM_STEPS={steps} cargo test --test envtest_random\nworld: {world}\nmutation history:{history}",
            seed = self.seed,
            steps = self.steps,
            world = self.world.describe(),
        )
    }

    fn fail(&self, step: usize, what: &str) -> ! {
        panic!(
            "random state-transition test failed: {what}\n{}",
            self.context(step)
        )
    }

    fn group_names(&self) -> Vec<&'static str> {
        self.world.groups.iter().map(|g| g.name).collect()
    }

    /// Picks the next mutation among those possible in the current world.
    fn pick_kind(&mut self, step: usize, disruptive: bool) -> Kind {
        let any_broken = self.world.groups.iter().any(|g| g.broken.is_some());
        let any_good = self
            .world
            .groups
            .iter()
            .any(|g| g.broken.is_none() && g.name != RIVAL);
        let has_pods = !self.world.pods.is_empty();
        let possible = |kind: Kind, world: &World| match kind {
            Kind::AddFiller => world.filler.is_none() && !world.filler_candidates().is_empty(),
            Kind::RemoveFiller => world.filler.is_some(),
            Kind::Contest => world.rival().is_none() && !world.contestable().is_empty(),
            Kind::Uncontest => world.rival().is_some(),
            _ => true,
        };
        // Each hostile mutation runs at least once in a run of 24 steps: at steps 3, 7, 11, 15,
        // 19 and 23, one that has not run yet and is possible is taken, or what keeps it from
        // running is undone (with one group, a contest and a filler exclude each other).
        if step % 4 == 3 {
            let due: Vec<Kind> = HOSTILE
                .iter()
                .copied()
                .filter(|k| !self.counts.contains_key(&format!("{k:?}")))
                .filter_map(|k| match k {
                    _ if possible(k, &self.world) => Some(k),
                    Kind::AddFiller if self.world.rival().is_some() => Some(Kind::Uncontest),
                    Kind::Contest if self.world.filler.is_some() => Some(Kind::RemoveFiller),
                    _ => None,
                })
                .collect();
            if !due.is_empty() {
                return self.rng.pick(&due);
            }
        }
        let mut choices: Vec<(Kind, u32)> = vec![
            (Kind::AddPod, 12),
            (Kind::TopicQueues, 10),
            (Kind::Strategy, 10),
            (Kind::Model, 4),
            (Kind::GroupTopics, 6),
            (Kind::Recreate, 3),
        ];
        if has_pods {
            choices.push((Kind::DeletePod, 8));
            choices.push((Kind::FlipReady, 12));
        }
        if any_good {
            choices.push((Kind::Break, 5));
        }
        if any_broken {
            choices.push((Kind::Repair, 12));
        }
        for (kind, weight) in [
            (Kind::AddFiller, 3),
            (Kind::RemoveFiller, 6),
            (Kind::Contest, 3),
            (Kind::Uncontest, 4),
            (Kind::TopicAtLimit, 2),
        ] {
            if possible(kind, &self.world) {
                choices.push((kind, weight));
            }
        }
        if disruptive {
            choices.push((Kind::KillLeader, 4));
            choices.push((Kind::TermLeader, 2));
            // Restarts compound the watchers' backoff (see KNOWN_BUGS) and each costs 10-20 s:
            // at most two per run, six steps apart.
            if self.restarts.len() < 2 && self.restart_step.is_none_or(|s| step >= s + 6) {
                choices.push((Kind::RestartApiServer, 3));
            }
        }
        self.rng.weighted(&choices)
    }

    fn random_group(&mut self) -> &'static str {
        let names = self.group_names();
        self.rng.pick(&names)
    }

    /// Applies one mutation of the inputs; returns its description. `before` is updated for a
    /// group that is deleted and re-created.
    async fn mutate(
        &mut self,
        kind: Kind,
        step: usize,
        before: &mut BTreeMap<&'static str, Before>,
    ) -> String {
        let kind = if kind == Kind::AddPod && self.world.pods.len() >= MAX_PODS {
            Kind::DeletePod
        } else {
            kind
        };
        *self.counts.entry(format!("{kind:?}")).or_default() += 1;
        match kind {
            Kind::AddPod => {
                let apps = self.world.apps.clone();
                let app = self.rng.pick(&apps);
                let name = format!("{app}-{}", self.world.next_pod);
                self.world.next_pod += 1;
                let ready = self.rng.chance(85);
                self.cluster.pod(&name, json!({"app": app}), ready).await;
                self.world
                    .pods
                    .insert(name.clone(), PodModel { app, ready });
                format!(
                    "add pod {name} ({})",
                    if ready { "Ready" } else { "not Ready" }
                )
            }
            Kind::DeletePod => {
                let names: Vec<String> = self.world.pods.keys().cloned().collect();
                let name = names[self.rng.below(names.len())].clone();
                self.cluster.delete::<Pod>(&name).await;
                self.world.pods.remove(&name);
                if self.world.filler.as_ref() == Some(&name) {
                    self.world.filler = None;
                }
                format!("delete pod {name}")
            }
            Kind::FlipReady => {
                let names: Vec<String> = self.world.pods.keys().cloned().collect();
                let name = names[self.rng.below(names.len())].clone();
                let pod = self.world.pods.get_mut(&name).unwrap();
                pod.ready = !pod.ready;
                let ready = pod.ready;
                self.cluster.set_ready(&name, ready).await;
                format!("pod {name} Ready={ready}")
            }
            Kind::TopicQueues => {
                let t = self.rng.below(self.world.topics.len());
                let b = self.rng.below(self.world.topics[t].brokers.len());
                let read = if self.rng.chance(8) {
                    0
                } else {
                    1 + self.rng.below(6) as u32
                };
                let write = if self.rng.chance(60) {
                    read
                } else {
                    1 + self.rng.below(6) as u32
                };
                let permission = if self.rng.chance(30) {
                    self.rng.weighted(&PERMISSIONS)
                } else {
                    self.world.topics[t].brokers[b].permission
                };
                let broker = &mut self.world.topics[t].brokers[b];
                broker.read = read;
                broker.write = write;
                broker.permission = permission;
                let object = self.world.topics[t].object();
                self.cluster.apply::<Topic>(&object).await;
                format!(
                    "topic {}/{}: readQueues={read} writeQueues={write} permission={permission}",
                    self.world.topics[t].name, self.world.topics[t].brokers[b].name
                )
            }
            Kind::Strategy => {
                let g = self.random_group();
                let current = self.world.group(g).strategy;
                let others: Vec<&'static str> = STRATEGIES
                    .iter()
                    .copied()
                    .filter(|s| *s != current)
                    .collect();
                let strategy = self.rng.pick(&others);
                self.world.group_mut(g).strategy = strategy;
                self.apply_group(g).await;
                format!("group {g}: strategy {current} -> {strategy}")
            }
            Kind::Model => {
                let g = self.random_group();
                let group = self.world.group_mut(g);
                group.model = if group.clustering() {
                    "Broadcasting"
                } else {
                    "Clustering"
                };
                let model = group.model;
                self.apply_group(g).await;
                format!("group {g}: messageModel {model}")
            }
            Kind::GroupTopics => {
                let g = self.random_group();
                let subsets: [&[&'static str]; 3] = [&["t1"], &["t2"], &["t1", "t2"]];
                let current = self.world.group(g).topics.clone();
                let others: Vec<&[&'static str]> = subsets
                    .iter()
                    .copied()
                    .filter(|s| *s != current.as_slice())
                    .collect();
                let topics = self.rng.pick(&others).to_vec();
                self.world.group_mut(g).topics = topics.clone();
                self.apply_group(g).await;
                format!("group {g}: topics {current:?} -> {topics:?}")
            }
            Kind::Break => {
                let good: Vec<&'static str> = self
                    .world
                    .groups
                    .iter()
                    .filter(|g| g.broken.is_none() && g.name != RIVAL)
                    .map(|g| g.name)
                    .collect();
                let g = self.rng.pick(&good);
                let how = self.rng.pick(&[
                    Broken::MissingTopic,
                    Broken::BadOperator,
                    Broken::InWithoutValues,
                ]);
                self.world.group_mut(g).broken = Some(how);
                self.apply_group(g).await;
                format!("group {g}: break the spec ({how:?})")
            }
            Kind::Repair => {
                let broken: Vec<&'static str> = self
                    .world
                    .groups
                    .iter()
                    .filter(|g| g.broken.is_some())
                    .map(|g| g.name)
                    .collect();
                let g = self.rng.pick(&broken);
                let how = self.world.group_mut(g).broken.take();
                self.apply_group(g).await;
                format!("group {g}: repair the spec (was {how:?})")
            }
            Kind::Recreate => {
                let names: Vec<&'static str> = self
                    .group_names()
                    .into_iter()
                    .filter(|g| *g != RIVAL)
                    .collect();
                let g = self.rng.pick(&names);
                self.cluster.delete::<ConsumerGroup>(g).await;
                // The README: the pods of a deleted group lose label and annotation (bounded like
                // any convergence).
                let deleted = Instant::now();
                let left = loop {
                    let obs = self
                        .cluster
                        .observe()
                        .await
                        .unwrap_or_else(|e| self.fail(step, &e));
                    let left = labelled_for(&obs, g);
                    if left.is_empty() || deleted.elapsed() > CONVERGE_BOUND {
                        break left;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let mut note = String::new();
                if !left.is_empty() {
                    let what = format!(
                        "[sweep] {:.1?} after group {g} was deleted, its pods still carry its label and annotation: {left:?} (Lease holder {:?})",
                        deleted.elapsed(),
                        self.cluster.holder().await
                    );
                    if known("sweep") {
                        self.note_known("sweep", step, what);
                        note = " (its pods kept the label: known bug)".into();
                    } else {
                        self.history.push(format!("delete group {g}"));
                        self.fail(step, &what);
                    }
                }
                // The re-created group is a new object: no previous status; its pods are as the
                // deletion left them.
                let obs = self
                    .cluster
                    .observe()
                    .await
                    .unwrap_or_else(|e| self.fail(step, &e));
                before.insert(
                    g,
                    Before {
                        group: None,
                        labelled: labelled_for(&obs, g),
                    },
                );
                self.apply_group(g).await;
                format!("delete group {g} and re-create it{note}")
            }
            Kind::AddFiller => {
                let names = self.world.filler_candidates();
                // Mostly a consumer of a working group: the one whose writes are refused.
                let consuming: Vec<String> = names
                    .iter()
                    .filter(|n| {
                        let p = &self.world.pods[n.as_str()];
                        p.ready
                            && self
                                .world
                                .groups
                                .iter()
                                .any(|g| g.app == p.app && g.broken.is_none())
                    })
                    .cloned()
                    .collect();
                let names = if !consuming.is_empty() && self.rng.chance(80) {
                    consuming
                } else {
                    names
                };
                let name = names[self.rng.below(names.len())].clone();
                // The filler takes the place of the queues annotation (someone else's annotations
                // grew while the operator's was away): the operator must write it again, and
                // the API server refuses that with 422.
                let value = "x".repeat(ANNOTATIONS_LIMIT - FILLER.len() - FILLER_ROOM);
                let patch =
                    json!({"metadata": {"annotations": {FILLER: value, QUEUES_ANNOTATION: null}}});
                self.cluster
                    .api::<Pod>()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("filling the annotations of {name}: {e}"));
                // A failing group leaves its pods as they are: as they are now.
                for b in before.values_mut() {
                    if let Some(kept) = b.labelled.get_mut(&name) {
                        *kept = None;
                    }
                }
                self.world.filler = Some(name.clone());
                format!(
                    "fill the annotations of pod {name} ({} bytes, {FILLER_ROOM} left), its queues annotation removed",
                    ANNOTATIONS_LIMIT - FILLER_ROOM
                )
            }
            Kind::RemoveFiller => {
                let name = self.world.filler.take().unwrap();
                let patch = json!({"metadata": {"annotations": {FILLER: null}}});
                self.cluster
                    .api::<Pod>()
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap_or_else(|e| panic!("removing the filler of {name}: {e}"));
                format!("remove the filler annotation of pod {name}")
            }
            Kind::Contest => {
                let names = self.world.contestable();
                let g = self.rng.pick(&names);
                let of = self.world.group(g).clone();
                let strategy = self.rng.pick(&STRATEGIES);
                self.world.groups.push(GroupModel {
                    name: RIVAL,
                    app: of.app,
                    topics: vec!["t1"],
                    strategy,
                    model: "Clustering",
                    broken: None,
                });
                self.apply_group(RIVAL).await;
                format!(
                    "contest: group {RIVAL} ({} characters) selects the pods of group {g} (app {})",
                    RIVAL.len(),
                    of.app
                )
            }
            Kind::Uncontest => {
                self.cluster.delete::<ConsumerGroup>(RIVAL).await;
                self.world.groups.retain(|g| g.name != RIVAL);
                format!("end the contest: delete group {RIVAL}")
            }
            Kind::TopicAtLimit => {
                let t = self.rng.below(self.world.topics.len());
                let b = self.rng.below(self.world.topics[t].brokers.len());
                let mut over = self.world.topics[t].clone();
                over.brokers[b].read = QUEUES_LIMIT + 1;
                over.brokers[b].write = QUEUES_LIMIT + 1;
                let name = over.name;
                match self
                    .cluster
                    .api::<Topic>()
                    .patch(
                        name,
                        &PatchParams::apply(HARNESS_MANAGER).force(),
                        &Patch::Apply(over.object()),
                    )
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 422 => {}
                    other => self.fail(
                        step,
                        &format!(
                            "[limits] a Topic with {} queues on a broker was not refused at admission: {:?}",
                            QUEUES_LIMIT + 1,
                            other.map(|t| t.spec)
                        ),
                    ),
                }
                let broker = &mut self.world.topics[t].brokers[b];
                broker.read = QUEUES_LIMIT;
                broker.write = QUEUES_LIMIT;
                broker.permission = "ReadWrite";
                let object = self.world.topics[t].object();
                self.cluster.apply::<Topic>(&object).await;
                format!(
                    "topic {name}/{}: readQueues=writeQueues={QUEUES_LIMIT} ReadWrite (the limit; {} refused at admission)",
                    self.world.topics[t].brokers[b].name,
                    QUEUES_LIMIT + 1
                )
            }
            Kind::KillLeader | Kind::TermLeader | Kind::RestartApiServer => {
                unreachable!("disruptive mutations are handled by step()")
            }
        }
    }

    async fn apply_group(&self, g: &str) {
        let object = self.world.group(g).object();
        self.cluster.apply::<ConsumerGroup>(&object).await;
    }

    /// Waits until the Lease names a live replica, and returns its index.
    async fn live_leader(&self, step: usize) -> usize {
        let what = format!("a live replica to hold the Lease\n{}", self.context(step));
        let live: Vec<String> = self.live.iter().map(|o| o.identity.clone()).collect();
        let cluster = &self.cluster;
        let live = &live;
        support::eventually(&what, || async move {
            let holder = cluster.holder().await;
            match holder
                .as_ref()
                .and_then(|h| live.iter().position(|l| l == h))
            {
                Some(i) => Ok(i),
                None => Err(format!("holder {holder:?}, live replicas {live:?}")),
            }
        })
        .await
    }

    /// Starts a replica in place of a stopped one: under the same identity or a new one.
    fn replace(&mut self, stopped: Operator) -> String {
        let same = self.rng.chance(40);
        let identity = if same {
            // Same log file: the new process truncates it, so the old handle is dropped.
            let identity = stopped.identity.clone();
            drop(stopped);
            identity
        } else {
            self.retired.push(stopped);
            self.next_identity += 1;
            format!("op-{}", self.next_identity)
        };
        self.live.push(self.cluster.operator(&identity));
        identity
    }

    /// One step: a mutation (a disruption is followed by one input mutation), then the
    /// invariants.
    async fn step(&mut self, step: usize) {
        let obs = self
            .cluster
            .observe()
            .await
            .unwrap_or_else(|e| self.fail(step, &e));
        let mut before: BTreeMap<&'static str, Before> = self
            .group_names()
            .into_iter()
            .map(|g| (g, before_of(&obs, g)))
            .collect();
        let kind = self.pick_kind(step, true);
        let description = match kind {
            Kind::KillLeader | Kind::TermLeader => {
                let i = self.live_leader(step).await;
                let mut op = self.live.remove(i);
                let who = op.identity.clone();
                let verb = if kind == Kind::KillLeader {
                    op.kill();
                    "SIGKILL"
                } else {
                    match op.terminate() {
                        Some(status) if status.success() => {}
                        other => {
                            let what =
                                format!("leader {who} did not exit cleanly on SIGTERM: {other:?}");
                            if known("sigterm-exit") {
                                self.note_known("sigterm-exit", step, what);
                                // A replica that hangs in shutdown may still renew the Lease.
                                op.kill();
                            } else {
                                self.history.push(format!("SIGTERM leader {who}"));
                                self.retired.push(op);
                                self.fail(step, &format!("[sigterm-exit] {what}"));
                            }
                        }
                    }
                    "SIGTERM"
                };
                *self.counts.entry(format!("{kind:?}")).or_default() += 1;
                let new = self.replace(op);
                let then = self.pick_kind(step, false);
                let rest = self.mutate(then, step, &mut before).await;
                format!("{verb} leader {who}, start replica {new}; then {rest}")
            }
            Kind::RestartApiServer => {
                *self.counts.entry(format!("{kind:?}")).or_default() += 1;
                let started = Instant::now();
                let down = Timestamp::now();
                if let Err(e) = self.cluster.server.restart_apiserver().await {
                    self.fail(step, &format!("restarting kube-apiserver: {e}"));
                }
                self.restarts.push((down, Timestamp::now() + RBAC_WARMUP));
                self.restart_step = Some(step);
                self.cluster.client = self.cluster.server.admin().await.expect("admin client");
                let took = started.elapsed();
                let then = self.pick_kind(step, false);
                let rest = self.mutate(then, step, &mut before).await;
                format!("restart kube-apiserver ({took:.1?}); then {rest}")
            }
            _ => self.mutate(kind, step, &mut before).await,
        };
        self.history.push(description);
        self.converge(step, &before).await;
    }

    /// The replicas' logs must show no request refused by RBAC (except while kube-apiserver was
    /// restarting) and no panic: the chart grants everything the operator does.
    fn assert_clean(&self) {
        let restarting = |line: &str| {
            let plain = strip_ansi(line);
            let Some(at) = plain
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<Timestamp>().ok())
            else {
                return false;
            };
            self.restarts
                .iter()
                .any(|(from, to)| *from <= at && at <= *to)
        };
        for op in self.live.iter().chain(&self.retired) {
            let forbidden: Vec<String> = op
                .forbidden_lines()
                .into_iter()
                .filter(|l| !restarting(l))
                .collect();
            assert!(
                forbidden.is_empty(),
                "the chart's RBAC refused requests of {}:\n{}\n{}",
                op.identity,
                forbidden.join("\n"),
                self.context(self.steps)
            );
            assert!(
                !op.logs().contains("panicked"),
                "{} panicked\n{}",
                op.identity,
                self.context(self.steps)
            );
        }
    }

    /// Within two minutes of a kube-apiserver restart (the watchers' backoff resets after two
    /// quiet minutes), slow convergence is recovery from it: a separate invariant id.
    fn recovering(&self) -> bool {
        self.restarts.last().is_some_and(|(_, warm)| {
            Timestamp::now().duration_since(*warm) < SignedDuration::from_secs(120)
        })
    }

    /// The last disruption in the history, for slow-convergence reports.
    fn since_disruption(&self) -> String {
        let last = self.history.iter().enumerate().rev().find(|(_, h)| {
            h.contains("SIGKILL") || h.contains("SIGTERM") || h.contains("restart kube-apiserver")
        });
        let ready = self
            .restarts
            .last()
            .map(|(_, warm)| format!("; kube-apiserver last ready at {}", *warm - RBAC_WARMUP))
            .unwrap_or_default();
        match last {
            Some((i, h)) => format!("last disruption at step {i}: {h}{ready}"),
            None => "no disruption so far".into(),
        }
    }

    fn note_known(&self, id: &'static str, step: usize, what: String) {
        self.seen.borrow_mut().entry(id).or_insert((step, what));
    }

    /// Waits until every invariant holds, then watches for [`QUIET`] that nothing is written.
    async fn converge(&mut self, step: usize, before: &BTreeMap<&'static str, Before>) {
        // The expectations, for the owners of the contested pods they were computed for
        // (computed again when those change: only while a contest runs).
        let expects: RefCell<Option<(Owners, Vec<Expect>)>> = RefCell::new(None);
        let context = self.context(step);
        let groups = self.group_names();
        let what = format!("the invariants after step {step}\n{}", self.context(step));
        // Recovering from a kube-apiserver restart takes minutes while that bug is known.
        let deadline = if known("slow-recovery") && self.recovering() {
            support::deadline().max(Duration::from_secs(180))
        } else {
            support::deadline()
        };
        let started = Instant::now();
        // What was still wrong when the step took longer than CONVERGE_BOUND.
        let late: RefCell<Option<String>> = RefCell::new(None);
        {
            let cluster = &self.cluster;
            let world = &self.world;
            let expects = &expects;
            let groups = &groups;
            let seen = &self.seen;
            let late = &late;
            let context = &context;
            support::eventually_within(&what, deadline, || async move {
                let obs = cluster.observe().await?;
                let owners = owners_of(world, &obs);
                if expects.borrow().as_ref().is_none_or(|(o, _)| *o != owners) {
                    let mut list = Vec::new();
                    for g in &world.groups {
                        let before = before.get(g.name).cloned().unwrap_or_default();
                        let tag = format!("step{step:02}-{}", g.name);
                        match expect(cluster, world, g, &before, &tag, &owners).await {
                            Ok(e) => list.push(e),
                            Err(e) => {
                                panic!("random state-transition test failed: {e}\n{context}")
                            }
                        }
                    }
                    *expects.borrow_mut() = Some((owners, list));
                }
                let violations = {
                    let cached = expects.borrow();
                    let list = &cached.as_ref().unwrap().1;
                    let mut v = check(list, groups, &obs);
                    v.extend(check_contest(world, list, before, &obs));
                    v
                };
                let (known_now, real): (Vec<Violation>, Vec<Violation>) =
                    violations.into_iter().partition(|(id, _)| known(id));
                if !real.is_empty() {
                    let text = format_violations(&real);
                    if started.elapsed() > CONVERGE_BOUND && late.borrow().is_none() {
                        *late.borrow_mut() = Some(text.clone());
                    }
                    return Err(text);
                }
                for (id, what) in known_now {
                    seen.borrow_mut().entry(id).or_insert((step, what));
                }
                Ok(())
            })
            .await;
        }
        let converged = started.elapsed();
        // What the hostile input made the oracle expect, for the step's line.
        let mut notes = Vec::new();
        if let Some((_, list)) = expects.borrow().as_ref() {
            for e in list {
                if let Some(pod) = &e.refused {
                    notes.push(format!("{}: WriteRejected for {pod}", e.group.name));
                }
            }
            if let Some(app) = self.world.contested_app() {
                let owned: Vec<String> = list
                    .iter()
                    .filter(|e| e.group.app == app)
                    .map(|e| {
                        let name = if e.group.name == RIVAL {
                            "rival"
                        } else {
                            e.group.name
                        };
                        format!("{name} {:?}", e.consumers)
                    })
                    .collect();
                notes.push(format!("contested {app}: {}", owned.join(", ")));
            }
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", notes.join("; "))
        };
        if converged > CONVERGE_BOUND {
            let id = if self.recovering() {
                "slow-recovery"
            } else {
                "slow-convergence"
            };
            let what = format!(
                "[{id}] step {step} converged only after {converged:.1?} (bound {CONVERGE_BOUND:?}); {}; still wrong after {CONVERGE_BOUND:?}:{}",
                self.since_disruption(),
                late.borrow().clone().unwrap_or_default()
            );
            if known(id) {
                self.note_known(id, step, what);
            } else {
                self.fail(step, &what);
            }
        }
        let exited: Vec<String> = self
            .live
            .iter_mut()
            .filter_map(|op| op.exited().map(|s| format!("{} ({s})", op.identity)))
            .collect();
        if !exited.is_empty() {
            self.fail(step, &format!("[replicas] replicas exited: {exited:?}"));
        }
        // 6. Nothing is written once converged.
        let first = self
            .cluster
            .observe()
            .await
            .unwrap_or_else(|e| self.fail(step, &e));
        tokio::time::sleep(QUIET).await;
        let second = self
            .cluster
            .observe()
            .await
            .unwrap_or_else(|e| self.fail(step, &e));
        let writes = writes_between(&first, &second);
        if !writes.is_empty() {
            let what = format!(
                "[quiet] objects written within {QUIET:?} after convergence:{}",
                writes
                    .iter()
                    .map(|w| format!("\n  {w}"))
                    .collect::<String>()
            );
            if known("quiet") {
                self.note_known("quiet", step, what);
            } else {
                self.fail(step, &what);
            }
        }
        println!(
            "{} step {step:>2}: converged in {converged:.1?}: {}{notes}",
            Timestamp::now(),
            self.history.last().unwrap()
        );
    }
}

/// A log line without its colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Groups and pods whose resourceVersion changed between two observations, with what changed.
fn writes_between(a: &Observed, b: &Observed) -> Vec<String> {
    let mut out = Vec::new();
    for (name, g) in &b.groups {
        if let Some(old) = a.groups.get(name)
            && old.resource_version() != g.resource_version()
        {
            out.push(format!(
                "group {name}: status {} -> {}",
                serde_json::to_string(&old.status).unwrap(),
                serde_json::to_string(&g.status).unwrap()
            ));
        }
    }
    for (name, p) in &b.pods {
        if let Some(old) = a.pods.get(name)
            && old.resource_version() != p.resource_version()
        {
            let meta = |p: &Pod| {
                format!(
                    "labels {:?} annotations {:?} managers {:?}",
                    p.labels(),
                    p.annotations(),
                    p.managed_fields()
                        .iter()
                        .map(|m| (m.manager.clone(), m.time.as_ref().map(|t| t.0.to_string())))
                        .collect::<Vec<_>>()
                )
            };
            out.push(format!("pod {name}: {} -> {}", meta(old), meta(p)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_state_transitions() {
    let Some(cluster) = Cluster::start(TEST).await else {
        return;
    };
    let seed = seed_from_env();
    let steps = steps_from_env();
    println!("seed={seed} steps={steps}");
    println!("replay: REBALANCER_RANDOM_SEED={seed} cargo test --test envtest_random");
    if KNOWN_BUGS.is_empty() {
        println!("known bugs: none (every check is enforced)");
    }
    for (id, description) in KNOWN_BUGS {
        println!("known bug, check [{id}] not enforced: {description}");
    }
    let mut rng = Rng(seed);

    // The initial world.
    let two_groups = rng.chance(60);
    let broker = |name: &'static str, rng: &mut Rng| {
        let q = 2 + rng.below(4) as u32;
        Broker {
            name,
            read: q,
            write: q,
            permission: "ReadWrite",
        }
    };
    let topics = vec![
        TopicModel {
            name: "t1",
            brokers: vec![broker("broker-a", &mut rng), broker("broker-b", &mut rng)],
        },
        TopicModel {
            name: "t2",
            brokers: vec![broker("broker-a", &mut rng), broker("broker-c", &mut rng)],
        },
    ];
    let mut groups = vec![GroupModel {
        name: "g1",
        app: "c1",
        topics: vec!["t1"],
        strategy: rng.pick(&STRATEGIES),
        model: "Clustering",
        broken: None,
    }];
    let mut apps = vec!["c1"];
    if two_groups {
        groups.push(GroupModel {
            name: "g2",
            app: "c2",
            topics: vec!["t1", "t2"],
            strategy: rng.pick(&STRATEGIES),
            model: "Clustering",
            broken: None,
        });
        apps.push("c2");
    }
    apps.push("stray");
    let world = World {
        topics,
        groups,
        pods: BTreeMap::new(),
        next_pod: 0,
        apps,
        filler: None,
    };
    let mut run = Run {
        seed,
        steps,
        rng,
        world,
        cluster,
        restarts: Vec::new(),
        restart_step: None,
        live: Vec::new(),
        retired: Vec::new(),
        next_identity: 0,
        history: Vec::new(),
        seen: RefCell::new(BTreeMap::new()),
        counts: BTreeMap::new(),
    };

    // Two replicas; op-a leads.
    let a = run.cluster.operator("op-a");
    run.live.push(a);
    {
        let what = format!("op-a to hold the Lease\n{}", run.context(0));
        let cluster = &run.cluster;
        support::eventually(&what, || async move {
            match cluster.holder().await {
                Some(h) if h == "op-a" => Ok(()),
                other => Err(format!("holder {other:?}")),
            }
        })
        .await;
    }
    let b = run.cluster.operator("op-b");
    run.live.push(b);
    let started = Instant::now();

    for t in run.world.topics.clone() {
        run.cluster.apply::<Topic>(&t.object()).await;
    }
    for app in run.world.apps.clone() {
        let n = if app == "stray" { 1 } else { 3 };
        for _ in 0..n {
            let name = format!("{app}-{}", run.world.next_pod);
            run.world.next_pod += 1;
            run.cluster.pod(&name, json!({"app": app}), true).await;
            run.world.pods.insert(name, PodModel { app, ready: true });
        }
    }
    for g in run.world.groups.clone() {
        run.cluster.apply::<ConsumerGroup>(&g.object()).await;
    }
    run.history
        .push(format!("initial world: {}", run.world.describe()));
    run.converge(0, &BTreeMap::new()).await;

    // A name of 64 characters is refused at admission (the rival's 63 work end to end).
    let long = format!("{RIVAL}y");
    let refused = run
        .cluster
        .api::<ConsumerGroup>()
        .patch(
            &long,
            &PatchParams::apply(HARNESS_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "rebalancer.dev/v1alpha1", "kind": "ConsumerGroup",
                "metadata": {"name": long},
                "spec": {"topics": ["t1"], "consumers": {"selector": {"matchLabels": {"app": "c1"}}}}
            })),
        )
        .await;
    match refused {
        Err(kube::Error::Api(s)) if s.message.contains("at most 63 characters") => {
            println!("a group name of 64 characters is refused at admission: {}", s.message);
        }
        other => run.fail(
            0,
            &format!(
                "[names] a group name of 64 characters was not refused at admission with \"at most 63 characters\": {:?}",
                other.map(|g| g.metadata.name)
            ),
        ),
    }

    for step in 1..=steps {
        run.step(step).await;
    }

    run.assert_clean();
    // The replicas' logs live in the server's folder, removed at the end: print them on request.
    if std::env::var_os("REBALANCER_RANDOM_LOGS").is_some() {
        for op in run.live.iter().chain(&run.retired) {
            println!("--- log of operator {} ---\n{}", op.identity, op.logs());
        }
    }
    println!(
        "done: seed={seed}, {steps} steps in {:.1?}; mutations {:?}",
        started.elapsed(),
        run.counts
    );
    let hostile: Vec<String> = HOSTILE
        .iter()
        .map(|k| format!("{k:?} x{}", run.counts.get(&format!("{k:?}")).unwrap_or(&0)))
        .collect();
    println!("hostile mutations: {}", hostile.join(", "));
    for (id, (step, what)) in run.seen.borrow().iter() {
        println!("KNOWN BUG [{id}] reproduced (first at step {step}): {what}");
    }
}
