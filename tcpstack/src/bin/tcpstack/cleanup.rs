//! Undo actions (iptables rules) for the one exit path that skips destructors: a panic, after
//! which the hook exits the process. Normal exits rely on the owners' `Drop`.

use std::sync::Mutex;

type Action = Box<dyn FnOnce() + Send>;

static ACTIONS: Mutex<Vec<(&'static str, Action)>> = Mutex::new(Vec::new());

/// Runs `action` if the process panics.
pub fn register(what: &'static str, action: impl FnOnce() + Send + 'static) {
    let mut actions = ACTIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    actions.push((what, Box::new(action)));
}

/// Runs every registered action, newest first.
pub fn run_all() {
    let actions = {
        let mut actions = ACTIONS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *actions)
    };
    for (what, action) in actions.into_iter().rev() {
        tracing::debug!(what, "cleaning up");
        action();
    }
}

/// Keeps the default report, then cleans up and exits: a panic anywhere (a connection task
/// included) is a bug, and going on without the rules would let the kernel reset our peers.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        run_all();
        std::process::exit(101);
    }));
}
