// The consoles' built assets are embedded at compile time: rebuild when
// `scripts/console.sh` rewrites them.
fn main() {
    println!("cargo:rerun-if-changed=dist");
}
