//! A cluster's event lifetime: how long its API server keeps an event after the event's last
//! update (kube-apiserver's `--event-ttl`, 1 hour by default; EKS allows 10 to 60 minutes,
//! OpenShift keeps 3 hours). No API reveals it, so the registry says it (`event_lifetime: 3h`).
//! Two events listings further apart than it may have missed events: that stretch is recorded
//! as a gap ([`crate::store::event_history`]).

use std::{fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An event lifetime, written as humantime reads it (`1h`, `90m`, `2s`); never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLifetime(pub Duration);

impl EventLifetime {
    /// The API server's default (`--event-ttl=1h`, kube-apiserver's options).
    pub const DEFAULT: Self = Self(Duration::from_secs(60 * 60));

    /// The lifetime as a PostgreSQL `interval` literal's text: `3600000 milliseconds`.
    pub fn as_interval(&self) -> String {
        format!("{} milliseconds", self.0.as_millis())
    }
}

impl Default for EventLifetime {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for EventLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for EventLifetime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match humantime::parse_duration(&text) {
            Ok(lifetime) if !lifetime.is_zero() => Ok(Self(lifetime)),
            Ok(_) => Err(serde::de::Error::custom("event_lifetime must be longer than zero")),
            Err(err) => Err(serde::de::Error::custom(format!("event_lifetime `{text}`: {err} (e.g. 1h, 90m)"))),
        }
    }
}

impl Serialize for EventLifetime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_humantime_and_zero_is_refused() {
        let read = |text: &str| serde_norway::from_str::<EventLifetime>(text);
        assert_eq!(read("90m").unwrap(), EventLifetime(Duration::from_secs(90 * 60)));
        assert_eq!(read("2s").unwrap().as_interval(), "2000 milliseconds");
        assert!(read("0s").unwrap_err().to_string().contains("longer than zero"));
        assert!(read("soon").unwrap_err().to_string().contains("event_lifetime `soon`"));
        assert_eq!(serde_norway::to_string(&EventLifetime::DEFAULT).unwrap().trim(), "1h");
    }
}
