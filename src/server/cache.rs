//! Figures read from the state database and answered to every caller for a while (SPEC §9:
//! stats "at most 1 s stale"), without the herd: when the value is missing or too old, one
//! caller reads it while the others wait for that read; when it is getting old, one caller
//! reads it again while the others are still answered the value they have. Under a steady
//! load nobody waits for the database.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Result;

struct Snapshot<T> {
    /// The caller's generation when it was read: a newer one (the queue changed) makes it stale.
    generation: u64,
    /// When its read began: its age counts from there, so no answer is older than the TTL.
    read_at: Instant,
    value: T,
}

pub struct Fresh<T> {
    ttl: Duration,
    slot: Mutex<Option<Snapshot<T>>>,
    /// Held by the one caller that reads.
    reading: tokio::sync::Mutex<()>,
}

impl<T: Clone> Fresh<T> {
    pub fn new(ttl: Duration) -> Fresh<T> {
        Fresh {
            ttl,
            slot: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The value and its age, when it is of `generation` and younger than the TTL.
    fn current(&self, generation: u64) -> Option<(T, Duration)> {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let s = slot.as_ref()?;
        let age = s.read_at.elapsed();
        (s.generation == generation && age < self.ttl).then(|| (s.value.clone(), age))
    }

    async fn read_into<F, Fut>(&self, generation: u64, read: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let read_at = Instant::now();
        let value = read().await?;
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Snapshot {
            generation,
            read_at,
            value: value.clone(),
        });
        Ok(value)
    }

    /// The value of `generation`, read with `read` when there is none younger than the TTL.
    pub async fn get<F, Fut>(&self, generation: u64, read: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if let Some((value, age)) = self.current(generation) {
            if age < self.ttl / 2 {
                return Ok(value);
            }
            // Past half its life: one caller reads it again now, the others keep answering it.
            return match self.reading.try_lock() {
                Ok(_reading) => self.read_into(generation, read).await,
                Err(_) => Ok(value),
            };
        }
        let _reading = self.reading.lock().await;
        // Whoever held the lock before may have just read it.
        if let Some((value, _)) = self.current(generation) {
            return Ok(value);
        }
        self.read_into(generation, read).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn one_read_serves_every_caller_until_it_ages_or_the_generation_moves() {
        let fresh = Fresh::new(Duration::from_mins(1));
        let reads = AtomicU32::new(0);
        let read = || async { Ok(reads.fetch_add(1, Ordering::SeqCst) + 1) };
        assert_eq!(fresh.get(0, read).await.unwrap(), 1);
        assert_eq!(fresh.get(0, read).await.unwrap(), 1);
        assert_eq!(
            fresh.get(1, read).await.unwrap(),
            2,
            "a new generation reads again"
        );
        let short = Fresh::new(Duration::from_millis(40));
        assert_eq!(short.get(0, read).await.unwrap(), 3);
        tokio::time::sleep(Duration::from_millis(25)).await;
        assert_eq!(
            short.get(0, read).await.unwrap(),
            4,
            "past half its life: read again"
        );
        tokio::time::sleep(Duration::from_millis(45)).await;
        assert_eq!(
            short.get(0, read).await.unwrap(),
            5,
            "past its life: read again"
        );
    }
}
