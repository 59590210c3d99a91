//! [`Notifier`] on Amazon SNS: the stack's alert topic.

use async_trait::async_trait;
use aws_sdk_sns::Client;

use super::aws::classify;
use crate::errors::RotationError;
use crate::ports::Notifier;

pub struct SnsTopic {
    client: Client,
    topic_arn: String,
}

impl SnsTopic {
    pub fn new(client: Client, topic_arn: String) -> Self {
        Self { client, topic_arn }
    }
}

#[async_trait]
impl Notifier for SnsTopic {
    async fn publish(&self, subject: &str, message: &str) -> Result<(), RotationError> {
        // SNS refuses a subject over 100 characters or with a line break.
        let subject: String = subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(100)
            .collect();
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(subject)
            .message(message)
            .send()
            .await
            .map_err(|e| classify("sns:Publish", e))?;
        Ok(())
    }
}
