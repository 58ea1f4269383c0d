use thiserror::Error;

/// Why a value from outside could not become a domain value.
///
/// Each variant names the field it concerns so that the HTTP layer and the worker can both
/// report it precisely without knowing how the check was made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The field is absent or `null`.
    #[error("{field} is required")]
    Missing { field: &'static str },
    /// The field is present but unacceptable; `reason` says why, for a human.
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl DomainError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { field, reason: reason.into() }
    }

    /// The same complaint about a field of another name, for a value parsed under one name
    /// (`password`) but sent under another (`newPassword`).
    pub fn for_field(self, field: &'static str) -> Self {
        match self {
            Self::Missing { .. } => Self::Missing { field },
            Self::Invalid { reason, .. } => Self::Invalid { field, reason },
        }
    }

    /// What is wrong with the field, without its name: `is required`, or the reason.
    pub fn reason(&self) -> &str {
        match self {
            Self::Missing { .. } => "is required",
            Self::Invalid { reason, .. } => reason,
        }
    }

    /// The name of the offending field, as it is spelled on the wire.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing { field } | Self::Invalid { field, .. } => field,
        }
    }
}
