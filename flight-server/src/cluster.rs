//! Running queries across the cluster: the planner (`skein_sql::plan`) picks a shape, the
//! executor sends fragments to peers and merges what comes back.

pub(crate) mod exec;
