//! # tandem-simulation
//!
//! The deterministic simulator of a Tandem cluster (turmoil). This crate currently holds only
//! the smoke check that turmoil runs here; the simulated cluster, faults and invariants build
//! on the node's seams.

#[cfg(test)]
mod tests {
    #[test]
    fn turmoil_runs_a_simulated_host() {
        let mut sim = turmoil::Builder::new().build();
        sim.client("probe", async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            Ok(())
        });
        sim.run().unwrap();
        assert!(sim.elapsed() >= std::time::Duration::from_millis(10));
    }
}
