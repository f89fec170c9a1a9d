//! cqrs-es `EventStore` over any [`super::EventLog`].
