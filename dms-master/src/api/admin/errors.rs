//! Refused operations as gRPC statuses: the one place the errors of tasks, replicas,
//! schedules and the store become [`Status`] codes (an invalid parameter `InvalidArgument`, an
//! unknown task or replica `NotFound`, an operation that does not fit the current state
//! `FailedPrecondition`, a store that cannot be read `Unavailable`), keeping their messages.

use tonic::Status;

use crate::replication::api::NodeApiError;
use crate::tasks::request::TaskApiError;

/// The answer to every schedule call until a scheduler is wired in.
/// A refused schedule operation as a gRPC status.
pub(super) fn schedule_status(e: &crate::ops::schedule::ScheduleError) -> Status {
    use crate::ops::schedule::ScheduleError;
    match e {
        ScheduleError::NotFound(_) => Status::not_found(e.to_string()),
        ScheduleError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        ScheduleError::State(_) => Status::internal(e.to_string()),
    }
}

/// A refused task operation as a gRPC status.
pub fn task_status(e: TaskApiError) -> Status {
    match e {
        TaskApiError::Invalid(m) => Status::invalid_argument(m),
        TaskApiError::Busy(m) => Status::resource_exhausted(m),
        e @ TaskApiError::NotFound(_) => Status::not_found(e.to_string()),
        e @ TaskApiError::AlreadyEnded { .. } => Status::failed_precondition(e.to_string()),
        TaskApiError::Store(e) => Status::unavailable(format!("the task store failed: {e}")),
    }
}

/// A refused node operation as a gRPC status.
pub fn node_status(e: NodeApiError) -> Status {
    match e {
        NodeApiError::Invalid(m) => Status::invalid_argument(m),
        e @ NodeApiError::NotFound(_) => Status::not_found(e.to_string()),
        NodeApiError::NotConnected(m) => Status::failed_precondition(m),
        NodeApiError::NoAnswer(m) => Status::deadline_exceeded(m),
        NodeApiError::Internal(m) => Status::internal(m),
    }
}

/// A store that could not be read.
pub(super) fn store_status(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the store cannot be read: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskStatus;
    use crate::tasks::request;
    use tonic::Code;

    #[test]
    fn task_errors_map_to_grpc_codes() {
        let cases = [
            (
                TaskApiError::Invalid("field `limit`: 0".into()),
                Code::InvalidArgument,
            ),
            (TaskApiError::NotFound("x".into()), Code::NotFound),
            (
                TaskApiError::AlreadyEnded {
                    id: "x".into(),
                    status: TaskStatus::Completed,
                },
                Code::FailedPrecondition,
            ),
        ];
        for (e, code) in cases {
            let message = e.to_string();
            let s = task_status(e);
            assert_eq!(s.code(), code);
            assert_eq!(s.message(), message, "the message is the shared one");
        }
    }

    #[test]
    fn an_invalid_task_request_is_refused_with_the_rest_message() {
        // The same request, checked once, gives the same message on both front ends.
        let req = request::TaskRequest {
            days: Some(0),
            ..Default::default()
        };
        let e = req
            .check(crate::tasks::TaskKind::IncrementalUpdate)
            .unwrap_err();
        let s = task_status(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().starts_with("field `days`"), "{}", s.message());
    }

    #[test]
    fn node_errors_map_to_grpc_codes() {
        let cases = [
            (
                NodeApiError::Invalid("field `limit`".into()),
                Code::InvalidArgument,
            ),
            (NodeApiError::NotFound("r1".into()), Code::NotFound),
            (
                NodeApiError::NotConnected("r1".into()),
                Code::FailedPrecondition,
            ),
            (NodeApiError::NoAnswer("r1".into()), Code::DeadlineExceeded),
            (NodeApiError::Internal("disk".into()), Code::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(node_status(e).code(), code);
        }
        let e = crate::ops::schedule::ScheduleError::NotFound("nightly".into());
        assert_eq!(schedule_status(&e).code(), Code::NotFound);
        assert!(schedule_status(&e).message().contains("nightly"));
    }
}
