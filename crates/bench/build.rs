//! Tells the failover bench where the `mycluster` binary it drives is built: next to
//! this build's output, in `<target dir>/<profile dir>/mycluster` (cargo names the path
//! only for a package's own tests, and the binary is another package's).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        println!("cargo:warning=no OUT_DIR: the failover bench cannot find mycluster");
        return;
    };
    // OUT_DIR is <target dir>/<profile dir>/build/<package>-<hash>/out.
    let out_dir = std::path::PathBuf::from(out_dir);
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let bin = profile_dir.join("mycluster");
        println!("cargo:rustc-env=MYCLUSTER_BIN={}", bin.display());
    }
}
