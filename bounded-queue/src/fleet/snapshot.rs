//! [`LayerSnapshot`] for [`FleetRateLimitHandle`] (features `redis` and
//! `snapshot`): kind `fleet_rate_limit`, state
//! `{"mode": "shared", "keys": 2, "redis_commands": 40, "tokens_leased": 800, "rejected": 3,
//! "mode_changes": 0}`.

use resilience_core::snapshot::LayerSnapshot;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::service::{FleetRateLimitHandle, FleetRateLimitSnapshot};

// === impl FleetRateLimitHandle ===

impl LayerSnapshot for FleetRateLimitHandle {
    type Snapshot = FleetRateLimitSnapshot;

    fn kind(&self) -> &'static str {
        "fleet_rate_limit"
    }

    fn name(&self) -> &str {
        FleetRateLimitHandle::name(self)
    }

    fn snapshot(&self) -> FleetRateLimitSnapshot {
        FleetRateLimitHandle::snapshot(self)
    }
}

impl Serialize for FleetRateLimitSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("FleetRateLimitSnapshot", 6)?;
        s.serialize_field("mode", self.mode.as_str())?;
        s.serialize_field("keys", &self.keys)?;
        s.serialize_field("redis_commands", &self.redis_commands)?;
        s.serialize_field("tokens_leased", &self.tokens_leased)?;
        s.serialize_field("rejected", &self.rejected)?;
        s.serialize_field("mode_changes", &self.mode_changes)?;
        s.end()
    }
}
