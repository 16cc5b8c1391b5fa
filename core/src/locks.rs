//! Striped async locks: a fixed set of mutexes, a key hashed to one of them. Serializes the
//! writes of one key (a user, a receipt slot) without a map that grows with every key ever seen.

use std::hash::{DefaultHasher, Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

pub struct Striped {
    stripes: Vec<Mutex<()>>,
}

impl Striped {
    pub fn new(count: usize) -> Self {
        Self { stripes: (0..count.max(1)).map(|_| Mutex::new(())).collect() }
    }

    fn stripe(&self, key: &(impl Hash + ?Sized)) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.stripes[(hasher.finish() as usize) % self.stripes.len()]
    }

    pub async fn lock(&self, key: &(impl Hash + ?Sized)) -> MutexGuard<'_, ()> {
        self.stripe(key).lock().await
    }

    /// The stripe's guard if nobody holds it now (for work that may simply be skipped).
    pub fn try_lock(&self, key: &(impl Hash + ?Sized)) -> Option<MutexGuard<'_, ()>> {
        self.stripe(key).try_lock().ok()
    }
}
