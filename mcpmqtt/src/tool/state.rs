//! Application state a tool reaches without globals: [`State<T>`], the
//! values a server registers by type ([`States`]), and what each tool
//! declares it needs ([`StateNeed`]), so that a missing value is caught by
//! `build()`, before anything runs. Plain types: nothing here runs a call.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// A value of the application (a database pool, an HTTP client, the
/// configuration) shared by every call of the tools that take it.
///
/// Take it as an argument of a `#[tool]` function, by value: `db: State<Db>`.
/// It is not part of the input schema; the server hands it over from what
/// [`ServerBuilder::state`](crate::ServerBuilder::state) registered, and
/// `build()` fails if a tool takes a `State<T>` no `T` was registered for.
/// It is an [`Arc`] inside: cheap to clone, and it dereferences to `T`.
///
/// ```
/// use mcpmqtt::{tool, State};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Default)]
/// pub struct Hits(AtomicU64);
///
/// /// Counts its calls.
/// #[tool]
/// async fn hit(hits: State<Hits>) -> u64 {
///     hits.0.fetch_add(1, Ordering::SeqCst) + 1
/// }
///
/// let server = mcpmqtt::Server::builder("counter").state(Hits::default()).tool::<hit>().build();
/// assert!(server.is_ok());
/// ```
pub struct State<T: ?Sized>(Arc<T>);

impl<T> State<T> {
    /// Wraps a value, for calling a tool function directly (in a test).
    pub fn new(value: T) -> Self {
        State(Arc::new(value))
    }
}

impl<T: ?Sized> State<T> {
    /// The shared value itself, to keep or to hand on beyond the call.
    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        State(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> AsRef<T> for State<T> {
    fn as_ref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized> From<Arc<T>> for State<T> {
    /// Shares a value the application also keeps (to read it outside the
    /// tools, say).
    fn from(value: Arc<T>) -> Self {
        State(value)
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for State<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("State").field(&self.0).finish()
    }
}

/// A state type a tool takes: recorded on its [`ToolDef`](crate::ToolDef),
/// checked against the registered values by `build()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateNeed {
    pub type_id: TypeId,
    /// `std::any::type_name`, for the error.
    pub type_name: &'static str,
}

impl StateNeed {
    pub(crate) fn of<T: Send + Sync + 'static>() -> Self {
        StateNeed {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }
}

/// The values a server registered, by type. Cheap to clone: every call's
/// context holds the same map.
#[derive(Clone, Default)]
pub(crate) struct States(Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>);

impl States {
    /// Registers `value` as the `T` (replacing an earlier one).
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        Arc::make_mut(&mut self.0).insert(TypeId::of::<T>(), value);
    }

    pub(crate) fn contains(&self, type_id: TypeId) -> bool {
        self.0.contains_key(&type_id)
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        let value = self.0.get(&TypeId::of::<T>())?.clone();
        value.downcast::<T>().ok().map(State)
    }
}

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "States({} registered)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_comes_back_by_its_type_only() {
        let mut states = States::default();
        states.insert(Arc::new(7_u32));
        assert_eq!(states.get::<u32>().map(|s| *s), Some(7));
        assert!(states.get::<u64>().is_none());
        assert!(states.contains(TypeId::of::<u32>()));
        // Every context shares the one value.
        let copy = states.clone();
        assert!(Arc::ptr_eq(
            &copy.get::<u32>().unwrap().into_arc(),
            &states.get::<u32>().unwrap().into_arc()
        ));
    }
}
