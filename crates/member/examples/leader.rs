//! Runs work only while this pod leads its ElectionGroup, and prints each change of role.
//!
//! Inside a member pod (POD_NAME and POD_NAMESPACE from the downward API, a ServiceAccount that
//! may get and watch its own Pod and the ElectionGroups):
//!
//! ```text
//! cargo run -p podium-member --example leader
//! ```

use std::time::Duration;

use podium_member::{Member, MemberConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = kube::Client::try_default().await?;
    let config = MemberConfig::from_env(Duration::from_secs(5))?;
    let member = Member::start(client, config).await?;
    println!("started as {}", member.state().json_line());
    // Cancelled as soon as leadership ends; started again with the new term when it returns.
    member
        .run_while_leading(|stop, term| async move {
            println!("leading with term {term}: attach it to every write");
            stop.cancelled().await;
            println!("term {term} ended: stopping work");
        })
        .await;
    Ok(())
}
