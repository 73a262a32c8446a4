//! Panics inside a seed's run, caught and described so the failure report can name the seed.
//!
//! [`catching`] runs a closure under `catch_unwind` and returns, besides its result, every panic
//! raised on this thread meanwhile: the one that unwound out of the closure, and also those
//! something inside caught itself (tokio catches a panicking task's and hands it to a
//! `JoinHandle` that may never be looked at). A process-wide panic hook, installed once, records
//! each such panic's message and location in a thread-local, and prints nothing for them: the
//! seed's report says it all. Panics on any other thread, or outside [`catching`], go to the hook
//! that was there before, as usual.

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Whether this thread is inside [`catching`].
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// The panics recorded by the hook since [`catching`] began.
    static CAUGHT: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static HOOK: Once = Once::new();

/// The panic's message, when its payload is a string (as `panic!` makes it).
pub fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}

fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !CAPTURING.try_with(Cell::get).unwrap_or(false) {
                previous(info);
                return;
            }
            let mut what = payload_message(info.payload());
            if let Some(at) = info.location() {
                // The simulator is compiled as `src/../sim/`.
                let file = at.file().strip_prefix("src/../").unwrap_or(at.file());
                what.push_str(&format!(" (at {file}:{}:{})", at.line(), at.column()));
            }
            // Only with RUST_BACKTRACE (or RUST_LIB_BACKTRACE) set, as the default hook.
            let backtrace = Backtrace::capture();
            if backtrace.status() == BacktraceStatus::Captured {
                what.push_str(&format!("\nbacktrace:\n{}", short_backtrace(&backtrace.to_string())));
            }
            let _ = CAUGHT.try_with(|c| c.borrow_mut().push(what));
        }));
    });
}

/// The frames between the panic machinery and [`catching`], as the default hook's short
/// backtrace (all of them if those frames are not found).
fn short_backtrace(full: &str) -> String {
    let lines: Vec<&str> = full.lines().collect();
    // A frame's first line is "  N: function"; its "at file:line" lines follow.
    let is_frame = |l: &str| l.trim_start().split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok());
    let machinery = [
        "sim::panics::",
        "PanicHookInfo",
        "std::panicking::",
        "core::panicking::",
        "rust_begin_unwind",
        "std::sys::backtrace::",
    ];
    let first = lines
        .iter()
        .position(|l| is_frame(l) && !machinery.iter().any(|m| l.contains(m)))
        .unwrap_or(0);
    let end = lines[first..]
        .iter()
        .position(|l| is_frame(l) && (l.contains("catch_unwind") || l.contains("AssertUnwindSafe")))
        .map_or(lines.len(), |j| first + j);
    lines[first..end].join("\n")
}

/// Runs `f`, catching a panic that unwinds out of it. Returns `f`'s result (`None` if it
/// panicked) and the description (message and location) of every panic on this thread while
/// `f` ran, in order, whether `f` or something inside it caught it or not.
pub fn catching<R>(f: impl FnOnce() -> R) -> (Option<R>, Vec<String>) {
    install_hook();
    let was_capturing = CAPTURING.with(|c| c.replace(true));
    let outer = CAUGHT.with(|c| std::mem::take(&mut *c.borrow_mut()));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(was_capturing));
    let mut caught = CAUGHT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    let result = match result {
        Ok(r) => Some(r),
        Err(payload) => {
            // Another hook set after ours would have kept ours from seeing it.
            if caught.is_empty() {
                caught.push(format!("{} (location unknown)", payload_message(payload.as_ref())));
            }
            None
        }
    };
    (result, caught)
}

/// The panics [`catching`] returned, for a report: the first few in full, then how many more
/// (one panic often brings others, a poisoned lock or a closed channel); `None` if none.
pub fn summary(panics: &[String]) -> Option<String> {
    const SHOWN: usize = 5;
    let (first, rest) = panics.split_first()?;
    let mut out = first.clone();
    for p in rest.iter().take(SHOWN - 1) {
        out.push_str("\n  then: ");
        out.push_str(p);
    }
    if panics.len() > SHOWN {
        out.push_str(&format!("\n  and {} more panics", panics.len() - SHOWN));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_message_and_location() {
        let (r, caught) = catching(|| -> u32 { panic!("boom {}", 7) });
        assert!(r.is_none());
        assert_eq!(caught.len(), 1);
        assert!(caught[0].starts_with("boom 7 (at "), "{caught:?}");
        assert!(caught[0].contains("panics.rs:"), "{caught:?}");
    }

    #[test]
    fn records_panics_caught_inside() {
        let (r, caught) = catching(|| panic::catch_unwind(|| panic!("inner")).is_err());
        assert_eq!(r, Some(true));
        assert_eq!(caught.len(), 1);
        assert!(caught[0].starts_with("inner (at "), "{caught:?}");
        let (r, caught) = catching(|| 5);
        assert_eq!((r, caught.len()), (Some(5), 0));
    }

    #[test]
    fn summary_shows_the_first_five() {
        assert_eq!(summary(&[]), None);
        let many: Vec<String> = (1..=7).map(|i| format!("p{i}")).collect();
        assert_eq!(
            summary(&many).as_deref(),
            Some("p1\n  then: p2\n  then: p3\n  then: p4\n  then: p5\n  and 2 more panics")
        );
    }
}
