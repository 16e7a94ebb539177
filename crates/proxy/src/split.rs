//! The sticky weighted split: which arm (stable or canary) a request goes to.
//!
//! # Definition (a compatibility contract: every replica and every release must agree)
//!
//! ```text
//! input  = UTF-8(namespace) ‖ "/" ‖ UTF-8(rollout) ‖ 0x00 ‖ key bytes
//! h      = fmix64(fnv1a64(input))
//! bucket = h mod 10000                       (0 ..= 9999)
//! canary ⇔ bucket < canaryWeight × 100       (canaryWeight in percent, 0 ..= 100)
//! ```
//!
//! - `fnv1a64`: FNV-1a, 64 bit: start `0xcbf29ce484222325`; per byte `h ^= b; h *= 0x100000001b3`
//!   (wrapping).
//! - `fmix64`: the MurmurHash3 64-bit finaliser, applied so that keys differing only in their last
//!   characters (`user-1`, `user-2`) spread over all buckets:
//!   `h ^= h>>33; h *= 0xff51afd7ed558ccd; h ^= h>>33; h *= 0xc4ceb9fe1a85ec53; h ^= h>>33`.
//! - key bytes: the raw value of the first configured sticky header present on the request, else
//!   the configured top-level body field (a JSON string's unescaped UTF-8 content; any other JSON
//!   value's text as written), else no key: the request gets a uniformly random bucket.
//!
//! Because the threshold only rises with the weight, a key on the canary at 5 % stays there at
//! 25 %, 50 % and 100 %; at weight 0 nobody and at 100 everybody is on the canary. The rollout's
//! namespace and name are part of the input so that two rollouts split users independently.

/// Number of buckets; the weight in percent maps to `weight × 100` of them.
pub const BUCKETS: u32 = 10_000;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The arm a request is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    /// The model in use today.
    Stable,
    /// The model being rolled out.
    Canary,
}

impl Track {
    /// The value of the `x-modelrollout-track` response header and of `is_canary`-style labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }

    /// True for [`Track::Canary`].
    pub const fn is_canary(self) -> bool {
        matches!(self, Track::Canary)
    }
}

/// Hashes sticky keys for one rollout: the `namespace/rollout` prefix is hashed once, when the
/// routing table is built, so a request only hashes its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StickyHasher {
    prefix_state: u64,
}

impl StickyHasher {
    /// The hasher for rollout `rollout` in namespace `namespace`.
    pub fn new(namespace: &str, rollout: &str) -> Self {
        let mut state = FNV_OFFSET_BASIS;
        state = fnv1a64_update(state, namespace.as_bytes());
        state = fnv1a64_update(state, b"/");
        state = fnv1a64_update(state, rollout.as_bytes());
        state = fnv1a64_update(state, &[0]);
        StickyHasher { prefix_state: state }
    }

    /// The bucket (0..10000) of `key` for this rollout.
    pub fn bucket(&self, key: &[u8]) -> u32 {
        let hash = fmix64(fnv1a64_update(self.prefix_state, key));
        // The remainder is below 10000, so the narrowing cannot lose anything.
        (hash % u64::from(BUCKETS)) as u32
    }
}

/// The bucket of `key` for rollout `namespace/rollout` (see the module documentation).
pub fn bucket(namespace: &str, rollout: &str, key: &[u8]) -> u32 {
    StickyHasher::new(namespace, rollout).bucket(key)
}

/// A uniformly random bucket, for requests without a sticky key.
pub fn random_bucket() -> u32 {
    rand::random_range(0..BUCKETS)
}

/// The arm for `bucket` at `canary_weight` percent (weights above 100 count as 100).
pub fn track_for(bucket: u32, canary_weight: u32) -> Track {
    if bucket < canary_weight.min(100) * 100 { Track::Canary } else { Track::Stable }
}

fn fnv1a64_update(mut state: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        state ^= u64::from(byte);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers (computed by an independent Python implementation of the module doc's
    /// definition) pin the hash: changing any of them moves users between arms.
    #[test]
    fn known_answers() {
        let table: [(&str, &str, &[u8], u32); 6] = [
            ("ai", "chat-assistant", b"user-1", 6142),
            ("ai", "chat-assistant", b"user-2", 555),
            ("ai", "chat-assistant", b"", 908),
            ("default", "chat-assistant", b"user-1", 5357),
            ("ai", "embedder", b"user-1", 5043),
            ("ai", "chat-assistant", "sessión-ü".as_bytes(), 3839),
        ];
        for (namespace, rollout, key, expected) in table {
            assert_eq!(bucket(namespace, rollout, key), expected, "{namespace}/{rollout} {key:?}");
        }
        // The raw building blocks, against published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64_update(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64_update(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64_update(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// The same key gives the same bucket every time, and the prehashed prefix equals hashing
    /// the whole input at once.
    #[test]
    fn deterministic() {
        let hasher = StickyHasher::new("ai", "chat");
        for key in ["a", "user-42", "0123456789abcdef", ""] {
            let first = hasher.bucket(key.as_bytes());
            for _ in 0..10 {
                assert_eq!(hasher.bucket(key.as_bytes()), first);
                assert_eq!(bucket("ai", "chat", key.as_bytes()), first);
            }
            let whole = format!("ai/chat\0{key}");
            let direct =
                (fmix64(fnv1a64_update(FNV_OFFSET_BASIS, whole.as_bytes())) % 10_000) as u32;
            assert_eq!(direct, first);
        }
    }

    /// A key on the canary at a weight stays on it at every higher weight.
    #[test]
    fn monotone_in_weight() {
        let hasher = StickyHasher::new("ai", "chat");
        let weights = [5, 25, 50, 100];
        for i in 0..20_000u32 {
            let b = hasher.bucket(format!("user-{i}").as_bytes());
            let tracks: Vec<Track> = weights.iter().map(|&w| track_for(b, w)).collect();
            let first_canary = tracks.iter().position(|t| *t == Track::Canary);
            if let Some(first) = first_canary {
                assert!(
                    tracks[first..].iter().all(|t| *t == Track::Canary),
                    "user-{i}: {tracks:?}"
                );
            }
        }
    }

    /// At 0 % nothing and at 100 % everything goes to the canary (weights above 100 clamp).
    #[test]
    fn zero_and_hundred_percent() {
        for b in 0..BUCKETS {
            assert_eq!(track_for(b, 0), Track::Stable);
            assert_eq!(track_for(b, 100), Track::Canary);
            assert_eq!(track_for(b, 250), Track::Canary);
        }
    }

    /// Over 100 000 random keys the canary share is within ±0.5 points of the weight.
    #[test]
    fn canary_share_matches_weight() {
        let hasher = StickyHasher::new("ai", "chat-assistant");
        let keys: Vec<String> =
            (0..100_000).map(|_| format!("{:032x}", rand::random::<u128>())).collect();
        for weight in [1u32, 5, 25, 50, 99] {
            let canary = keys
                .iter()
                .filter(|k| track_for(hasher.bucket(k.as_bytes()), weight).is_canary())
                .count();
            let share = canary as f64 * 100.0 / keys.len() as f64;
            assert!((share - f64::from(weight)).abs() <= 0.5, "weight {weight}: share {share}");
        }
    }

    /// Sequential keys (typical user ids) spread as evenly as random ones.
    #[test]
    fn sequential_keys_spread_evenly() {
        let hasher = StickyHasher::new("ai", "chat-assistant");
        for weight in [1u32, 5, 25, 50, 99] {
            let canary = (0..100_000)
                .filter(|i| {
                    track_for(hasher.bucket(format!("user-{i}").as_bytes()), weight).is_canary()
                })
                .count();
            let share = canary as f64 / 1000.0;
            assert!((share - f64::from(weight)).abs() <= 0.5, "weight {weight}: share {share}");
        }
    }

    /// Random buckets cover the range and stay inside it.
    #[test]
    fn random_bucket_in_range() {
        for _ in 0..10_000 {
            assert!(random_bucket() < BUCKETS);
        }
    }
}
