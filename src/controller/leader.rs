//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica watches and computes; only
//! the holder of the lease writes. The flag drops the moment a renewal fails past the lease
//! duration, before anyone else can take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Whether this replica may write.
#[derive(Clone, Debug)]
pub struct Leadership {
    flag: Arc<AtomicBool>,
}

impl Leadership {
    /// Always the leader (leader election off).
    pub fn always() -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Not the leader until [`LeaseLock::run`] says so.
    pub fn follower() -> Self {
        Self {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }

    /// May this replica write now?
    pub fn is_leader(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    fn set(&self, v: bool) {
        self.flag.store(v, Ordering::SeqCst);
    }
}

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseLock {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

/// What the lease says about who may lead.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold it (or may take it): write `lease` back.
    Acquire,
    /// Someone else holds a live lease.
    Follow,
}

/// Lease writes carry the operator's field manager, like every other write.
fn write_params() -> PostParams {
    PostParams {
        field_manager: Some(super::context::FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// Decides from a lease's content whether `identity` may hold it at `now`.
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(h) if h == identity => Decision::Acquire,
        Some(_) => {
            let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let renewed = spec.renew_time.as_ref().map(|t| t.0);
            match renewed {
                Some(t) if t + SignedDuration::from_secs(seconds) > now => Decision::Follow,
                _ => Decision::Acquire,
            }
        }
    }
}

impl LeaseLock {
    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..LeaseSpec::default()
        }
    }

    /// One round: read the lease, take or renew it when allowed. Returns whether we lead.
    pub async fn try_acquire(&self, api: &Api<Lease>) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, now)),
                };
                api.create(&write_params(), &lease).await?;
                Ok(true)
            }
            Some(mut lease) => match decide(lease.spec.as_ref(), &self.identity, now) {
                Decision::Follow => Ok(false),
                Decision::Acquire => {
                    lease.spec = Some(self.spec(lease.spec.as_ref(), now));
                    // `replace` carries the resourceVersion we read: a racing writer gets a conflict.
                    api.replace(&self.name, &write_params(), &lease).await?;
                    Ok(true)
                }
            },
        }
    }

    /// Gives the lease up (on shutdown) so that a standby replica takes over at once instead of
    /// waiting for it to expire.
    pub async fn release(
        &self,
        client: Client,
        leadership: &Leadership,
    ) -> Result<(), kube::Error> {
        leadership.set(false);
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        if let Some(mut lease) = api.get_opt(&self.name).await? {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                api.replace(&self.name, &write_params(), &lease).await?;
                tracing::info!(lease = %self.name, "released the lease");
            }
        }
        Ok(())
    }

    /// Keeps trying to lead until the process ends; updates `leadership` and notifies `gained`
    /// each time this replica becomes the leader.
    pub async fn run(self, client: Client, leadership: Leadership, gained: watch::Sender<u64>) {
        let api: Api<Lease> = Api::namespaced(client, &self.namespace);
        let mut last_renewal: Option<tokio::time::Instant> = None;
        let mut terms = 0u64;
        loop {
            match self.try_acquire(&api).await {
                Ok(true) => {
                    last_renewal = Some(tokio::time::Instant::now());
                    if !leadership.is_leader() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                        leadership.set(true);
                        terms += 1;
                        let _ = gained.send(terms);
                    }
                }
                Ok(false) => {
                    if leadership.is_leader() {
                        tracing::warn!(lease = %self.name, "lost the lease to another replica");
                    }
                    leadership.set(false);
                }
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "lease renewal failed");
                    // Stop writing before the lease can expire and another replica take over.
                    let safe = self.duration.saturating_sub(self.renew_every);
                    if last_renewal.is_none_or(|t| t.elapsed() >= safe) {
                        leadership.set(false);
                    }
                }
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn live_lease_of_another_replica_is_respected() {
        let now = Timestamp::from_second(1_010).unwrap();
        assert_eq!(
            decide(Some(&spec("other", 1_000)), "me", now),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&spec("other", 990)), "me", now),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&spec("me", 1_000)), "me", now),
            Decision::Acquire
        );
        assert_eq!(decide(None, "me", now), Decision::Acquire);
    }
}
