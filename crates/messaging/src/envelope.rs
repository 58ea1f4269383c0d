//! LedgerFlow's two messages as the broker carries them: a transfer command on the way to a
//! worker, and a transfer result on the way back. Their AMQP properties (type, message id,
//! correlation id, headers) are set here and nowhere else.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use ledgerflow_domain::{TransactionId, TransferCommand, TransferResult};

use crate::{MessagingError, Publisher};

/// The AMQP `type` property of a transfer command.
pub const COMMAND_TYPE: &str = "ledgerflow.transfer.command.v1";
/// The AMQP `type` property of a transfer result.
pub const RESULT_TYPE: &str = "ledgerflow.transfer.result.v1";

/// The AMQP `type` property of an event on the event stream.
pub const EVENT_TYPE: &str = "ledgerflow.event.v1";

/// The AMQP header carrying the HTTP request id from the gateway to the worker's logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

impl Publisher {
    /// Publishes a command to the transfers exchange, routed by its sending account (so every
    /// command of one account reaches the same partition), and waits for the confirm. The
    /// message id is the transaction id, when the command has one (an upstream system's has
    /// none); `request_id` follows the transfer into the worker's logs.
    pub async fn publish_command(&self, cmd: &TransferCommand, request_id: Option<&str>) -> Result<(), MessagingError> {
        let mut headers = FieldTable::default();
        if let Some(request_id) = request_id {
            headers.insert(REQUEST_ID_HEADER.into(), AMQPValue::LongString(request_id.into()));
        }
        let mut props = BasicProperties::default()
            .with_headers(headers)
            .with_type(COMMAND_TYPE.into())
            .with_app_id(self.name().into())
            .with_timestamp(cmd.requested_at.timestamp().max(0).unsigned_abs());
        if let Some(id) = cmd.transaction_id {
            props = props.with_message_id(id.to_string().into());
        }
        let exchange = self.topology().transfers();
        self.publish(&exchange, &cmd.request.from.to_string(), &cmd.to_json(), props).await
    }

    /// Publishes a result to the results exchange, correlated with its transaction. The routing
    /// key is the transaction id (empty without one): the fanout ignores it, and the
    /// by-transaction exchange behind it routes by it to the gateways waiting on that id.
    pub async fn publish_result(&self, result: &TransferResult) -> Result<(), MessagingError> {
        let id = result.transaction_id.map(|id| id.to_string()).unwrap_or_default();
        let props = BasicProperties::default()
            .with_type(RESULT_TYPE.into())
            .with_correlation_id(id.as_str().into())
            .with_message_id(TransactionId::generate().to_string().into());
        self.publish(&self.topology().results(), &id, &result.to_json(), props).await
    }

    /// Publishes events to the event stream's topic exchange, in the order given, and waits
    /// for every confirm. Each is `(routing key, event id, JSON body)`; the event id is the
    /// message id, by which consumers dedupe.
    pub async fn publish_events(&self, events: &[(String, i64, Vec<u8>)]) -> Result<(), MessagingError> {
        let messages = events
            .iter()
            .map(|(routing_key, id, body)| {
                let props = BasicProperties::default()
                    .with_type(EVENT_TYPE.into())
                    .with_app_id(self.name().into())
                    .with_message_id(id.to_string().into());
                (routing_key.clone(), body.clone(), props)
            })
            .collect();
        self.publish_all(&self.topology().events(), messages).await
    }
}
