use thiserror::Error;

/// Everything that can go wrong talking to the broker.
#[derive(Debug, Error)]
pub enum MessagingError {
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("message could not be routed to any queue")]
    Unroutable,
    #[error("no publisher confirm within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    #[error("invalid broker address list: {0}")]
    InvalidBrokers(String),
}
