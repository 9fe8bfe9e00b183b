//! Stem cells: a bounded pool of generic pre-started sandboxes per kind, so that a cold
//! start only hands one the function's limits and code (see `hearth_sandbox::stem`).
//!
//! A kind is learned from the first cold start that could have used it (the backend
//! names it) and refilled in the background after every stem taken: at most
//! [`StemConfig::per_kind`] wait per kind, and at most [`StemConfig::memory_budget_mb`]
//! of memory is held by all of them together. When a kind asked for now does not fit,
//! the waiting stems of the kinds asked for least recently make room for it (a kind
//! learned once, say from a function since resized, must not hold the budget forever). A stem is taken out of the pool before it
//! is specialized, and a specialized stem is an instance of that one function version
//! (or destroyed): it never comes back here.

use hearth_sandbox::stem::{Stem, StemKind};
use hearth_sandbox::SandboxBackend;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a stem's replacement waits before it is made: the cold start that took the
/// stem (its code load and first call) is served first, not beside a sandbox being
/// built on the same cores. The pool holds two of a kind, so a second cold start in
/// that time still finds one.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// How many stems wait, and how much memory they may hold.
#[derive(Debug, Clone)]
pub struct StemConfig {
    /// Stems waiting per kind (0: no stems).
    pub per_kind: usize,
    /// Memory limit all waiting stems may have together, MB (each counts for its
    /// kind's [`StemKind::memory_mb`]).
    pub memory_budget_mb: u64,
}

impl Default for StemConfig {
    fn default() -> Self {
        StemConfig {
            per_kind: 2,
            memory_budget_mb: 512,
        }
    }
}

#[derive(Default)]
struct State {
    waiting: HashMap<StemKind, Vec<Box<dyn Stem>>>,
    /// Stems being made, per kind.
    making: HashMap<StemKind, usize>,
    /// When each kind was last asked for (a count of asks, not a time).
    asked: HashMap<StemKind, u64>,
    asks: u64,
    closed: bool,
}

impl State {
    /// Stems of `kind` waiting or being made.
    fn of_kind(&self, kind: &StemKind) -> usize {
        self.waiting.get(kind).map_or(0, Vec::len) + self.making.get(kind).copied().unwrap_or(0)
    }

    /// Memory limit of the stems waiting and being made, MB.
    fn memory_mb(&self) -> u64 {
        let waiting = self
            .waiting
            .iter()
            .map(|(kind, stems)| kind.memory_mb() * stems.len() as u64);
        let making = self
            .making
            .iter()
            .map(|(kind, n)| kind.memory_mb() * *n as u64);
        waiting.chain(making).sum()
    }
}

impl State {
    /// Sets the `hearth_stems_waiting` and `hearth_stems_making` gauges (all kinds
    /// together) to what this state holds: whoever waits for the pool to settle (the
    /// bench, before a cold start) reads them.
    fn publish(&self) {
        let waiting: usize = self.waiting.values().map(Vec::len).sum();
        let making: usize = self.making.values().sum();
        metrics::gauge!("hearth_stems_waiting").set(waiting as f64);
        metrics::gauge!("hearth_stems_making").set(making as f64);
    }
}

/// Takes out of the pool the waiting stems of kinds asked for less recently than `kind`,
/// least recent first, until `kind`'s missing stems fit in the budget (or nothing older
/// is left); the caller destroys them.
fn evict_for(state: &mut State, config: &StemConfig, kind: &StemKind) -> Vec<Box<dyn Stem>> {
    let have = state.of_kind(kind);
    let needed_mb = config.per_kind.saturating_sub(have) as u64 * kind.memory_mb();
    let free_mb = config.memory_budget_mb.saturating_sub(state.memory_mb());
    let mut to_free_mb = needed_mb.saturating_sub(free_mb);
    let asked = |k: &StemKind| state.asked.get(k).copied().unwrap_or(0);
    let this = asked(kind);
    let mut older: Vec<(u64, StemKind)> = state
        .waiting
        .keys()
        .filter(|k| asked(k) < this)
        .map(|k| (asked(k), k.clone()))
        .collect();
    older.sort_by_key(|(asked, _)| *asked);
    let mut evicted = Vec::new();
    for (_, old) in older {
        if to_free_mb == 0 {
            break;
        }
        let Some(stems) = state.waiting.get_mut(&old) else {
            continue;
        };
        while to_free_mb > 0 {
            let Some(stem) = stems.pop() else { break };
            to_free_mb = to_free_mb.saturating_sub(old.memory_mb());
            evicted.push(stem);
        }
        if stems.is_empty() {
            state.waiting.remove(&old);
        }
    }
    evicted
}

/// How many more stems of `kind` to make: up to `per_kind` of it, within the budget.
fn wanted(state: &State, config: &StemConfig, kind: &StemKind) -> usize {
    let have = state.of_kind(kind);
    let room = config.memory_budget_mb.saturating_sub(state.memory_mb()) / kind.memory_mb();
    config
        .per_kind
        .saturating_sub(have)
        .min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// The worker's stems.
pub struct Stems {
    backend: Arc<dyn SandboxBackend>,
    config: StemConfig,
    state: Mutex<State>,
}

impl Stems {
    /// An empty pool making stems with `backend`.
    pub fn new(backend: Arc<dyn SandboxBackend>, config: StemConfig) -> Arc<Stems> {
        Arc::new(Stems {
            backend,
            config,
            state: Mutex::new(State::default()),
        })
    }

    /// Takes a waiting stem of `kind` out of the pool (it is the caller's from now on)
    /// and starts making its replacement.
    pub fn take(self: &Arc<Self>, kind: &StemKind) -> Option<Box<dyn Stem>> {
        let stem = {
            let mut state = self.lock();
            state.asks += 1;
            let asks = state.asks;
            state.asked.insert(kind.clone(), asks);
            // The one that has waited longest: whatever it still did after it said
            // ready (its CFS burst refilling, its pages settling) is most likely over.
            let stem = state
                .waiting
                .get_mut(kind)
                .and_then(|stems| (!stems.is_empty()).then(|| stems.remove(0)));
            state.publish();
            stem
        };
        self.refill(kind);
        stem
    }

    /// Starts making stems of `kind` in the background, up to the pool's bounds.
    pub fn refill(self: &Arc<Self>, kind: &StemKind) {
        let (wanted, evicted) = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            let evicted = evict_for(&mut state, &self.config, kind);
            let wanted = wanted(&state, &self.config, kind);
            if wanted > 0 {
                *state.making.entry(kind.clone()).or_default() += wanted;
            }
            state.publish();
            (wanted, evicted)
        };
        if !evicted.is_empty() {
            tracing::debug!(
                ?kind,
                evicted = evicted.len(),
                "stems of kinds asked for less recently make room"
            );
            tokio::spawn(async move {
                for stem in evicted {
                    stem.destroy().await;
                }
            });
        }
        if wanted == 0 {
            return;
        }
        let stems = self.clone();
        let kind = kind.clone();
        // One after the other: a burst of spawns would compete with the calls being
        // served for the same cores.
        tokio::spawn(async move {
            tokio::time::sleep(REFILL_DELAY).await;
            for _ in 0..wanted {
                let made = stems.backend.create_stem(&kind).await;
                let late = {
                    let mut state = stems.lock();
                    if let Some(making) = state.making.get_mut(&kind) {
                        *making = making.saturating_sub(1);
                    }
                    let late = match made {
                        Ok(stem) if state.closed => Some(stem),
                        Ok(stem) => {
                            state.waiting.entry(kind.clone()).or_default().push(stem);
                            None
                        }
                        Err(error) => {
                            tracing::warn!(?kind, %error, "cannot make a stem");
                            None
                        }
                    };
                    state.publish();
                    late
                };
                if let Some(stem) = late {
                    stem.destroy().await;
                }
            }
        });
    }

    /// Stems waiting now, all kinds together.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.values().map(Vec::len).sum()
    }

    /// Stops making stems and destroys the waiting ones.
    pub async fn shutdown(&self) {
        let stems: Vec<Box<dyn Stem>> = {
            let mut state = self.lock();
            state.closed = true;
            let stems = state.waiting.drain().flat_map(|(_, v)| v).collect();
            state.publish();
            stems
        };
        for stem in stems {
            stem.destroy().await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data: keep serving after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_core::Runtime;

    fn kind(runtime: Runtime, tmp_size_mb: u64) -> StemKind {
        StemKind {
            runtime,
            output_quota_mb: 0,
            tmp_size_mb,
            cpu_quota_us: 0,
        }
    }

    #[test]
    fn the_pool_stops_at_its_count_per_kind_and_its_memory_budget() {
        let config = StemConfig {
            per_kind: 2,
            memory_budget_mb: 100,
        };
        let mut state = State::default();
        let python = kind(Runtime::Python, 0);
        assert_eq!(wanted(&state, &config, &python), 2);
        state.making.insert(python.clone(), 2);
        assert_eq!(wanted(&state, &config, &python), 0, "two of a kind at most");
        // 64 MB already held: one more 32 MB stem fits, a 64 MB one does not.
        let node = kind(Runtime::Nodejs, 0);
        assert_eq!(wanted(&state, &config, &node), 1);
        assert_eq!(wanted(&state, &config, &kind(Runtime::Nodejs, 64)), 0);
        let off = StemConfig {
            per_kind: 0,
            ..config
        };
        assert_eq!(wanted(&State::default(), &off, &python), 0);
    }

    /// A stem of no backend: only its kind matters here.
    struct Idle(StemKind);

    #[async_trait::async_trait]
    impl Stem for Idle {
        fn id(&self) -> &str {
            "idle"
        }
        fn kind(&self) -> &StemKind {
            &self.0
        }
        fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
            self
        }
        async fn destroy(self: Box<Self>) {}
    }

    #[test]
    fn a_kind_asked_for_now_takes_the_room_of_the_least_recently_asked() {
        let config = StemConfig {
            per_kind: 2,
            memory_budget_mb: 128,
        };
        let (python, node, cpp) = (
            kind(Runtime::Python, 0),
            kind(Runtime::Nodejs, 0),
            kind(Runtime::Cpp, 0),
        );
        let mut state = State::default();
        for (asks, k) in [&python, &node, &cpp].into_iter().enumerate() {
            state.asked.insert(k.clone(), asks as u64 + 1);
        }
        for k in [&python, &node] {
            let stems: Vec<Box<dyn Stem>> =
                vec![Box::new(Idle(k.clone())), Box::new(Idle(k.clone()))];
            state.waiting.insert(k.clone(), stems);
        }
        assert_eq!(wanted(&state, &config, &cpp), 0, "the budget is full");
        let evicted = evict_for(&mut state, &config, &cpp);
        assert_eq!(evicted.len(), 2);
        assert!(
            evicted.iter().all(|stem| stem.kind() == &python),
            "python was asked first"
        );
        assert!(!state.waiting.contains_key(&python));
        assert_eq!(wanted(&state, &config, &cpp), 2);
        // Nothing is evicted for a kind asked before the ones waiting.
        assert!(evict_for(&mut state, &config, &python).is_empty());
        assert_eq!(state.waiting[&node].len(), 2);
    }
}
