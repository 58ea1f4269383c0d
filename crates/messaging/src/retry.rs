//! The retry queues of earlier versions, emptied into the current one.

use lapin::options::BasicGetOptions;

use crate::{CommandDelivery, MessagingError, Publisher, QueueState, Settlement, TrustedUsers};

/// Moves up to `limit` commands waiting in the retry queues of earlier versions
/// ([`crate::Topology::retired_retries`]), as `queues` found them
/// ([`Publisher::retired_retries`]: one that does not answer, its broker node down, is not
/// among them), into the current one; returns how many moved. Each command is acked there
/// only once its copy is confirmed, and put back if the copy fails, so none is lost. The move
/// counts as one more attempt, like any trip through the retry queue.
/// `basic.get` takes the head of a queue whatever TTL it carries, or lacks: a message
/// without one, which stalled every message behind it in the oldest of these queues, cannot
/// stall this. Whom a command came from is judged by `trusted` as on any delivery: versions
/// before publishers set `user_id` left none, so such a command is refused as anonymous once
/// moved (a gateway's is sent again by its republisher; a service hears UNAUTHORIZED and may
/// resend).
pub async fn move_retired(
    publisher: &Publisher,
    trusted: &TrustedUsers,
    queues: &[(String, QueueState)],
    limit: usize,
) -> Result<usize, MessagingError> {
    let mut moved = 0;
    for (queue, state) in queues {
        if state.ready == 0 {
            continue;
        }
        while moved < limit {
            let (channel, _) = publisher.channel().await?;
            let Some(message) = channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await?
            else {
                break;
            };
            let command = CommandDelivery(message.delivery);
            let origin = command.origin(trusted);
            match command.send_to_retry(publisher, &origin).await {
                Ok(()) => {
                    command.settle(Settlement::Ack, publisher, &origin).await?;
                }
                Err(e) => {
                    command.settle(Settlement::Requeue, publisher, &origin).await?;
                    return Err(e);
                }
            }
            moved += 1;
        }
    }
    Ok(moved)
}
