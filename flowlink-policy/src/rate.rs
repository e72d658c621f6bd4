//! Rate limits (`[[rate_limits]]`): GCRA buckets from `governor`, one per distinct key.

use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

use crate::pattern::Patterns;
use crate::policy::Policy;

/// What a rate limit's buckets are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// One bucket per agent name.
    Agent,
    /// One bucket per service.
    Service,
    /// One bucket per (service, tool) pair.
    Tool,
}

impl RateScope {
    /// The lowercase name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            RateScope::Agent => "agent",
            RateScope::Service => "service",
            RateScope::Tool => "tool",
        }
    }
}

/// A compiled `[[rate_limits]]` entry.
#[derive(Debug, Clone)]
pub(crate) struct RateLimitSpec {
    pub(crate) id: String,
    pub(crate) scope: RateScope,
    pub(crate) agent: Patterns,
    pub(crate) service: Patterns,
    pub(crate) tool: Patterns,
    pub(crate) quota: Quota,
}

/// A call refused by a rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimited {
    /// The `[[rate_limits]]` id that refused.
    pub rule_id: String,
    /// The limit's scope.
    pub scope: RateScope,
    /// The bucket: the agent name, the service, or `service/tool`.
    pub key: String,
    /// How long until this bucket admits a call again (always > 0).
    pub retry_after: Duration,
}

/// Bucket key: (agent | service | service, "" | tool). A pair, so no separator can collide.
type Key = (String, String);

struct Limit<C: Clock> {
    spec: RateLimitSpec,
    gcra: Gcra<Key, DefaultKeyedStateStore<Key>, C, NoOpMiddleware<C::Instant>>,
}

/// The live state of a policy's rate limits. Build a new one when the policy changes.
///
/// `check` consumes one cell from every limit the call falls under, in file order, and stops at
/// the first refusal (limits checked before it have already counted the call).
pub struct RateLimiter<C: Clock = DefaultClock> {
    limits: Vec<Limit<C>>,
    clock: C,
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field(
                "limits",
                &self.limits.iter().map(|l| &l.spec.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RateLimiter<DefaultClock> {
    /// Rate limiter for `policy`'s `[[rate_limits]]`, on the monotonic clock.
    pub fn new(policy: &Policy) -> RateLimiter {
        RateLimiter::with_clock(policy, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// Rate limiter on a given clock; tests pass a `governor::clock::FakeRelativeClock`.
    pub fn with_clock(policy: &Policy, clock: C) -> RateLimiter<C> {
        let limits = policy
            .rate_limits
            .iter()
            .map(|spec| Limit {
                spec: spec.clone(),
                gcra: Gcra::new(spec.quota, DefaultKeyedStateStore::default(), clock.clone()),
            })
            .collect();
        RateLimiter { limits, clock }
    }

    /// Counts one call; `Err` when a limit it falls under has no cell left.
    pub fn check(&self, agent: &str, service: &str, tool: &str) -> Result<(), RateLimited> {
        for limit in &self.limits {
            let spec = &limit.spec;
            if !(spec.tool.is_match(tool)
                && spec.service.is_match(service)
                && spec.agent.is_match(agent))
            {
                continue;
            }
            let key: Key = match spec.scope {
                RateScope::Agent => (agent.to_owned(), String::new()),
                RateScope::Service => (service.to_owned(), String::new()),
                RateScope::Tool => (service.to_owned(), tool.to_owned()),
            };
            if let Err(not_until) = limit.gcra.check_key(&key) {
                let wait = not_until.wait_time_from(self.clock.now());
                let shown = match spec.scope {
                    RateScope::Tool => format!("{service}/{tool}"),
                    _ => key.0,
                };
                return Err(RateLimited {
                    rule_id: spec.id.clone(),
                    scope: spec.scope,
                    key: shown,
                    // A refusal always means "not now": never report zero.
                    retry_after: wait.max(Duration::from_nanos(1)),
                });
            }
        }
        Ok(())
    }

    /// Forgets buckets that are full again, bounding memory when many keys come and go.
    /// Call it now and then (e.g. once a minute).
    pub fn forget_idle(&self) {
        for limit in &self.limits {
            limit.gcra.retain_recent();
        }
    }

    /// Number of limits in force.
    pub fn len(&self) -> usize {
        self.limits.len()
    }

    /// Whether the policy has no rate limits.
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}
