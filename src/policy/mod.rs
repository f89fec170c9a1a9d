//! Policy: decides, before anything is queued, whether a principal may run a tool with these
//! arguments. Pure functions, no IO.
