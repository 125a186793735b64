//! `consumerIds: Client`: which pod each connected RocketMQ client runs in. A client id is
//! `clientIP@instanceName[@unitName]` (RocketMQ's `ClientConfig.buildMQClientId`); its IP part is
//! matched against the group's pods' IPs. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::api::{ConsumerAssignment, QueueRange};
use crate::controller::consumers::is_consumer;

/// The connected clients of a group and their pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientMap {
    /// Client id -> pod name, for the clients whose IP is a pod's.
    pub pod_of: BTreeMap<String, String>,
    /// Clients whose IP is no pod's of the group, sorted.
    pub without_pod: Vec<String>,
    /// Ready pods of the group with no connected client, sorted.
    pub pods_without_client: Vec<String>,
}

/// The IP part of a client id (everything before the first `@`).
pub fn client_ip(client_id: &str) -> &str {
    client_id.split('@').next().unwrap_or(client_id)
}

impl ClientMap {
    /// Maps `clients` to `pods` (the group's selected pods, sorted by name). Pods that are going
    /// away take no client. Pods sharing an IP (host networking) give its clients to the first
    /// Ready one by name, else the first by name.
    pub fn new(clients: &[String], pods: &[Arc<Pod>]) -> ClientMap {
        let mut by_ip: BTreeMap<&str, &Pod> = BTreeMap::new();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            for ip in pod_ips(pod) {
                let slot = by_ip.entry(ip).or_insert(pod);
                if !is_consumer(slot) && is_consumer(pod) {
                    *slot = pod;
                }
            }
        }
        let mut map = ClientMap::default();
        for client in clients {
            match by_ip.get(client_ip(client)) {
                Some(pod) => {
                    map.pod_of.insert(client.clone(), pod.name_any());
                }
                None => map.without_pod.push(client.clone()),
            }
        }
        let with_client: BTreeSet<&str> = map.pod_of.values().map(String::as_str).collect();
        map.pods_without_client = pods
            .iter()
            .filter(|p| is_consumer(p))
            .map(|p| p.name_any())
            .filter(|name| !with_client.contains(name.as_str()))
            .collect();
        map.without_pod.sort();
        map
    }

    /// Sets each assignment's `pod`.
    pub fn label(&self, assignments: &mut [ConsumerAssignment]) {
        for a in assignments {
            a.pod = self.pod_of.get(&a.consumer).cloned();
        }
    }

    /// The assignments per pod, in pod name order: the queues of every client a pod runs
    /// (a pod may run several clients, e.g. one per instance name). Clients without a pod have
    /// no pod to tell.
    pub fn by_pod(&self, assignments: &[ConsumerAssignment]) -> Vec<ConsumerAssignment> {
        let mut pods: BTreeMap<&str, Vec<QueueRange>> = BTreeMap::new();
        for a in assignments {
            if let Some(pod) = self.pod_of.get(&a.consumer) {
                pods.entry(pod.as_str())
                    .or_default()
                    .extend(a.queues.iter().cloned());
            }
        }
        pods.into_iter()
            .map(|(pod, mut queues)| {
                queues.sort();
                // Broadcasting: every client of a pod holds every queue.
                queues.dedup();
                ConsumerAssignment {
                    consumer: pod.to_string(),
                    pod: None,
                    queues,
                }
            })
            .collect()
    }

    /// Whether every client has a pod and every Ready pod a client.
    pub fn matches(&self) -> bool {
        self.without_pod.is_empty() && self.pods_without_client.is_empty()
    }
}

fn pod_ips(pod: &Pod) -> Vec<&str> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<&str> = status.pod_ip.iter().map(String::as_str).collect();
    for ip in status.pod_ips.iter().flatten() {
        if !ips.contains(&ip.ip.as_str()) {
            ips.push(ip.ip.as_str());
        }
    }
    ips
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodIP, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![
                    PodIP { ip: ip.into() },
                    PodIP {
                        ip: format!("fd00::{}", &ip[ip.len() - 1..]),
                    },
                ]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        })
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn clients_map_to_pods_by_ip_and_both_kinds_of_mismatch_are_listed() {
        let pods = [
            pod("c-0", "10.0.0.1", true),
            pod("c-1", "10.0.0.2", true),
            pod("c-2", "10.0.0.3", true),
            pod("starting", "10.0.0.4", false),
        ];
        let clients = ids(&[
            "10.0.0.1@1#100",
            "10.0.0.1@2#100",
            "10.0.0.2@DEFAULT@unit",
            "fd00::4@DEFAULT",
            "192.168.9.9@outside",
        ]);
        let map = ClientMap::new(&clients, &pods);
        assert_eq!(map.pod_of["10.0.0.1@1#100"], "c-0");
        assert_eq!(map.pod_of["10.0.0.1@2#100"], "c-0");
        assert_eq!(map.pod_of["10.0.0.2@DEFAULT@unit"], "c-1");
        // A pod that is not Ready yet may already run a client; it is matched, not flagged.
        assert_eq!(map.pod_of["fd00::4@DEFAULT"], "starting");
        assert_eq!(map.without_pod, ids(&["192.168.9.9@outside"]));
        assert_eq!(map.pods_without_client, ids(&["c-2"]));
        assert!(!map.matches());
    }

    #[test]
    fn a_pod_with_two_clients_is_told_both_clients_queues() {
        let pods = [pod("c-0", "10.0.0.1", true)];
        let clients = ids(&["10.0.0.1@a", "10.0.0.1@b"]);
        let map = ClientMap::new(&clients, &pods);
        assert!(map.matches());
        let range = |ids: &str| QueueRange {
            topic: "t".into(),
            broker: "b".into(),
            queue_ids: ids.into(),
        };
        let mut assignments = vec![
            ConsumerAssignment {
                consumer: "10.0.0.1@a".into(),
                pod: None,
                queues: vec![range("2-3")],
            },
            ConsumerAssignment {
                consumer: "10.0.0.1@b".into(),
                pod: None,
                queues: vec![range("0-1")],
            },
        ];
        map.label(&mut assignments);
        assert_eq!(assignments[0].pod.as_deref(), Some("c-0"));
        let by_pod = map.by_pod(&assignments);
        assert_eq!(by_pod.len(), 1);
        assert_eq!(by_pod[0].consumer, "c-0");
        assert_eq!(by_pod[0].queues, vec![range("0-1"), range("2-3")]);
    }

    #[test]
    fn pods_sharing_an_ip_give_its_clients_to_the_ready_one() {
        let pods = [pod("a", "10.0.0.9", false), pod("b", "10.0.0.9", true)];
        let map = ClientMap::new(&ids(&["10.0.0.9@x"]), &pods);
        assert_eq!(map.pod_of["10.0.0.9@x"], "b");
        assert!(map.pods_without_client.is_empty());
    }
}
