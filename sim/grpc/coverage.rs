//! What the production code did during a run, counted from its own log events: whether the
//! replication stream ran, whether the classic fallback did, how often sessions were lost.
//! Only `chainrep`'s events are looked at, so hyper's and h2's cost nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Log events by message, over one run.
#[derive(Clone, Default)]
pub struct Coverage(Arc<Mutex<BTreeMap<String, u64>>>);

impl Coverage {
    /// A subscriber that counts into this; install it around the run.
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync {
        let only_ours = Targets::new().with_target("chainrep", Level::DEBUG);
        tracing_subscriber::registry().with(Counter(self.clone()).with_filter(only_ours))
    }

    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

struct Counter(Coverage);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        *(self.0).0.lock().unwrap_or_else(|e| e.into_inner()).entry(m.0).or_default() += 1;
    }
}
