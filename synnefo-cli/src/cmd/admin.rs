//! `synnefo admin ...`: users, projects, memberships, quotas, flavors,
//! images, backends and tokens, straight against the database.
//!
//! Every listing prints a table, or JSON with `--json`. Passwords are read
//! from `--password-stdin` (or `--password`, which lands in shell history)
//! and stored argon2-hashed.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use synnefo_core::ids::{BackendId, FlavorId};
use synnefo_core::model::{Flavor, Image, Project, Quota, User};
use synnefo_core::ports::Store;
use synnefo_core::service::identity::{Identity, hash_password};

use crate::common::Context;

/// Admin command groups.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Users
    #[command(subcommand)]
    Users(UsersCommand),
    /// Projects (tenants)
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Project membership
    #[command(subcommand)]
    Members(MembersCommand),
    /// Per-project quotas
    #[command(subcommand)]
    Quotas(QuotasCommand),
    /// Flavors
    #[command(subcommand)]
    Flavors(FlavorsCommand),
    /// Images
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Ganeti backends (clusters)
    #[command(subcommand)]
    Backends(BackendsCommand),
    /// API tokens (e.g. for kamaki, which authenticates with a token)
    #[command(subcommand)]
    Tokens(TokensCommand),
}

/// Output options.
#[derive(Debug, Args, Clone, Copy)]
pub struct Output {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// How a password is given.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from standard input (first line)
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible in shell history and `ps`; prefer --password-stdin)
    #[arg(long)]
    pub password: Option<String>,
}

/// `admin users`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user
    Add {
        /// Login name
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// Operator
        #[arg(long)]
        admin: bool,
        /// Also make the user a member of this project (name; created if missing)
        #[arg(long)]
        project: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// List users
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Change a user's password
    Passwd {
        /// Login name
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Enable or disable a user
    Enable {
        /// Login name
        name: String,
        /// Disable instead
        #[arg(long)]
        disable: bool,
    },
}

/// `admin projects`.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project
    Add {
        /// Name
        name: String,
        #[command(flatten)]
        out: Output,
    },
    /// List projects
    List {
        #[command(flatten)]
        out: Output,
    },
}

/// `admin members`.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Make a user a member of a project
    Add {
        /// User login name
        user: String,
        /// Project name
        project: String,
    },
    /// List a user's projects
    List {
        /// User login name
        user: String,
        #[command(flatten)]
        out: Output,
    },
}

/// `admin quotas`.
#[derive(Debug, Subcommand)]
pub enum QuotasCommand {
    /// Set a project's limits (omitted limits become unlimited)
    Set {
        /// Project name
        project: String,
        /// Max servers
        #[arg(long)]
        servers: Option<i64>,
        /// Max vCPUs
        #[arg(long)]
        vcpus: Option<i64>,
        /// Max RAM (MiB)
        #[arg(long)]
        ram: Option<i64>,
    },
    /// Show a project's limits and usage
    Show {
        /// Project name
        project: String,
        #[command(flatten)]
        out: Output,
    },
}

/// `admin flavors`.
#[derive(Debug, Subcommand)]
pub enum FlavorsCommand {
    /// Create a flavor
    Add {
        /// Name
        name: String,
        /// vCPUs
        #[arg(long)]
        vcpus: i32,
        /// RAM (MiB)
        #[arg(long)]
        ram: i32,
        /// Disk (GiB)
        #[arg(long)]
        disk: i32,
        /// Ganeti disk template [default: ganeti.default_disk_template]
        #[arg(long)]
        disk_template: Option<String>,
        /// Hide from non-operators
        #[arg(long)]
        private: bool,
        #[command(flatten)]
        out: Output,
    },
    /// List flavors
    List {
        #[command(flatten)]
        out: Output,
    },
}

/// `admin images`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Register (or replace) an image
    Add {
        /// Display name
        name: String,
        /// Ganeti OS (e.g. snf-image+default)
        #[arg(long)]
        os_type: String,
        /// Id (a new UUID when omitted)
        #[arg(long)]
        id: Option<String>,
        /// OS parameter KEY=VALUE (repeatable), e.g. img_id=debian
        #[arg(long = "osparam", value_parser = key_value)]
        osparams: Vec<(String, String)>,
        /// Metadata KEY=VALUE (repeatable)
        #[arg(long = "property", value_parser = key_value)]
        properties: Vec<(String, String)>,
        /// Minimum disk (GiB)
        #[arg(long, default_value_t = 0)]
        min_disk: i32,
        /// Minimum RAM (MiB)
        #[arg(long, default_value_t = 0)]
        min_ram: i32,
        /// Private to this project (name)
        #[arg(long)]
        private_to: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// List images
    List {
        #[command(flatten)]
        out: Output,
    },
}

/// `admin backends`.
#[derive(Debug, Subcommand)]
pub enum BackendsCommand {
    /// Register a cluster (or update its address)
    Add {
        /// Name (the `[ganeti.clusters.NAME]` key)
        name: String,
        /// RAPI host
        #[arg(long)]
        host: String,
        /// RAPI port
        #[arg(long, default_value_t = 5080)]
        port: u16,
        #[command(flatten)]
        out: Output,
    },
    /// Stop placing new servers on a cluster
    Drain {
        /// Name or id
        backend: String,
    },
    /// Place new servers on a cluster again
    Undrain {
        /// Name or id
        backend: String,
    },
    /// List clusters with their usage
    List {
        #[command(flatten)]
        out: Output,
    },
}

/// `admin tokens`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a token for a user in a project and print it once
    Issue {
        /// User login name
        user: String,
        /// Project name [default: the user's first project]
        #[arg(long)]
        project: Option<String>,
        /// Lifetime in seconds [default: api.token_ttl_secs]
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn read_password(p: &PasswordArgs) -> anyhow::Result<String> {
    let pw = if p.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from stdin")?;
        s.lines().next().unwrap_or("").to_string()
    } else if let Some(pw) = &p.password {
        pw.clone()
    } else {
        bail!("give --password-stdin (or --password)");
    };
    if pw.len() < 8 {
        bail!("the password must have at least 8 characters");
    }
    Ok(pw)
}

/// Prints rows as an aligned table, or the JSON value.
fn print(out: Output, headers: &[&str], rows: Vec<Vec<String>>, json: Value) {
    if out.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        return;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(headers.iter().map(|h| h.to_string()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
}

async fn user(store: &dyn Store, name: &str) -> anyhow::Result<User> {
    store
        .user_by_name(name)
        .await?
        .ok_or_else(|| anyhow!("no user named {name:?}"))
}

async fn project(store: &dyn Store, name: &str) -> anyhow::Result<Project> {
    store
        .project_by_name(name)
        .await?
        .ok_or_else(|| anyhow!("no project named {name:?}"))
}

fn user_json(u: &User) -> Value {
    json!({"id": u.id, "name": u.name, "enabled": u.enabled, "is_admin": u.is_admin, "created": u.created})
}

fn limit(v: Option<i64>) -> String {
    v.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// Runs an admin command.
pub async fn run(ctx: &Context, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    let store: Arc<dyn Store> = Arc::new(ctx.store().await?);
    let s = store.as_ref();
    match cmd {
        AdminCommand::Users(c) => match c {
            UsersCommand::Add {
                name,
                password,
                admin,
                project: proj,
                out,
            } => {
                let pw = read_password(&password)?;
                let u = s.create_user(&name, &hash_password(&pw)?, admin).await?;
                if let Some(pname) = proj {
                    let p = match s.project_by_name(&pname).await? {
                        Some(p) => p,
                        None => s.create_project(&pname).await?,
                    };
                    s.add_member(&u.id, &p.id).await?;
                }
                print(
                    out,
                    &["ID", "NAME", "ADMIN"],
                    vec![vec![u.id.clone(), u.name.clone(), u.is_admin.to_string()]],
                    user_json(&u),
                );
            }
            UsersCommand::List { out } => {
                let users = s.list_users().await?;
                let rows = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.id.clone(),
                            u.name.clone(),
                            u.enabled.to_string(),
                            u.is_admin.to_string(),
                        ]
                    })
                    .collect();
                print(
                    out,
                    &["ID", "NAME", "ENABLED", "ADMIN"],
                    rows,
                    Value::Array(users.iter().map(user_json).collect()),
                );
            }
            UsersCommand::Passwd { name, password } => {
                let u = user(s, &name).await?;
                let pw = read_password(&password)?;
                s.update_user(&u.id, Some(hash_password(&pw)?), None)
                    .await?;
                println!("password of {name} changed");
            }
            UsersCommand::Enable { name, disable } => {
                let u = user(s, &name).await?;
                s.update_user(&u.id, None, Some(!disable)).await?;
                println!("{name} {}", if disable { "disabled" } else { "enabled" });
            }
        },
        AdminCommand::Projects(c) => match c {
            ProjectsCommand::Add { name, out } => {
                let p = s.create_project(&name).await?;
                print(
                    out,
                    &["ID", "NAME"],
                    vec![vec![p.id.clone(), p.name.clone()]],
                    json!({"id": p.id, "name": p.name}),
                );
            }
            ProjectsCommand::List { out } => {
                let ps = s.list_projects().await?;
                let rows = ps
                    .iter()
                    .map(|p| vec![p.id.clone(), p.name.clone()])
                    .collect();
                print(
                    out,
                    &["ID", "NAME"],
                    rows,
                    json!(
                        ps.iter()
                            .map(|p| json!({"id": p.id, "name": p.name}))
                            .collect::<Vec<_>>()
                    ),
                );
            }
        },
        AdminCommand::Members(c) => match c {
            MembersCommand::Add {
                user: uname,
                project: pname,
            } => {
                let u = user(s, &uname).await?;
                let p = project(s, &pname).await?;
                s.add_member(&u.id, &p.id).await?;
                println!("{uname} is a member of {pname}");
            }
            MembersCommand::List { user: uname, out } => {
                let u = user(s, &uname).await?;
                let ps = s.user_projects(&u.id).await?;
                let rows = ps
                    .iter()
                    .map(|p| vec![p.id.clone(), p.name.clone()])
                    .collect();
                print(
                    out,
                    &["ID", "NAME"],
                    rows,
                    json!(
                        ps.iter()
                            .map(|p| json!({"id": p.id, "name": p.name}))
                            .collect::<Vec<_>>()
                    ),
                );
            }
        },
        AdminCommand::Quotas(c) => match c {
            QuotasCommand::Set {
                project: pname,
                servers,
                vcpus,
                ram,
            } => {
                let p = project(s, &pname).await?;
                for (what, v) in [("servers", servers), ("vcpus", vcpus), ("ram", ram)] {
                    if v.is_some_and(|n| n < 0) {
                        bail!("--{what} must not be negative");
                    }
                }
                s.set_quota(
                    &p.id,
                    Quota {
                        servers,
                        vcpus,
                        ram_mib: ram,
                    },
                )
                .await?;
                println!(
                    "quota of {pname}: servers {}, vcpus {}, ram {} MiB",
                    limit(servers),
                    limit(vcpus),
                    limit(ram)
                );
            }
            QuotasCommand::Show {
                project: pname,
                out,
            } => {
                let p = project(s, &pname).await?;
                let q = s.quota(&p.id).await?;
                let u = s.usage(&p.id).await?;
                let rows = vec![
                    vec!["servers".into(), limit(q.servers), u.servers.to_string()],
                    vec!["vcpus".into(), limit(q.vcpus), u.vcpus.to_string()],
                    vec!["ram (MiB)".into(), limit(q.ram_mib), u.ram_mib.to_string()],
                ];
                print(
                    out,
                    &["RESOURCE", "LIMIT", "IN USE"],
                    rows,
                    json!({"project": p.name, "quota": q, "usage": u}),
                );
            }
        },
        AdminCommand::Flavors(c) => match c {
            FlavorsCommand::Add {
                name,
                vcpus,
                ram,
                disk,
                disk_template,
                private,
                out,
            } => {
                if vcpus < 1 || ram < 1 || disk < 0 {
                    bail!("vcpus and ram must be positive, disk not negative");
                }
                let f = s
                    .create_flavor(&Flavor {
                        id: FlavorId(1),
                        name,
                        vcpus,
                        ram_mib: ram,
                        disk_gib: disk,
                        disk_template: disk_template
                            .unwrap_or_else(|| ctx.settings.ganeti.default_disk_template.clone()),
                        is_public: !private,
                        deleted: false,
                    })
                    .await?;
                print(
                    out,
                    &["ID", "NAME"],
                    vec![vec![f.id.to_string(), f.name.clone()]],
                    json!(f),
                );
            }
            FlavorsCommand::List { out } => {
                let fs = s.list_flavors().await?;
                let rows = fs
                    .iter()
                    .map(|f| {
                        vec![
                            f.id.to_string(),
                            f.name.clone(),
                            f.vcpus.to_string(),
                            f.ram_mib.to_string(),
                            f.disk_gib.to_string(),
                            f.disk_template.clone(),
                            f.is_public.to_string(),
                            f.deleted.to_string(),
                        ]
                    })
                    .collect();
                print(
                    out,
                    &[
                        "ID", "NAME", "VCPUS", "RAM", "DISK", "TEMPLATE", "PUBLIC", "DELETED",
                    ],
                    rows,
                    json!(fs),
                );
            }
        },
        AdminCommand::Images(c) => match c {
            ImagesCommand::Add {
                name,
                os_type,
                id,
                osparams,
                properties,
                min_disk,
                min_ram,
                private_to,
                out,
            } => {
                let owner = match private_to {
                    Some(p) => Some(project(s, &p).await?.id),
                    None => None,
                };
                let now = chrono::Utc::now();
                let img = s
                    .put_image(&Image {
                        id: id.unwrap_or_else(uuid_v4_like),
                        name,
                        os_type,
                        osparams: osparams.into_iter().collect::<BTreeMap<_, _>>(),
                        status: "active".into(),
                        metadata: properties.into_iter().collect(),
                        min_disk_gib: min_disk,
                        min_ram_mib: min_ram,
                        is_public: owner.is_none(),
                        owner,
                        created: now,
                        updated: now,
                    })
                    .await?;
                print(
                    out,
                    &["ID", "NAME"],
                    vec![vec![img.id.clone(), img.name.clone()]],
                    json!(img),
                );
            }
            ImagesCommand::List { out } => {
                let is = s.list_images().await?;
                let rows = is
                    .iter()
                    .map(|i| {
                        vec![
                            i.id.clone(),
                            i.name.clone(),
                            i.os_type.clone(),
                            i.status.clone(),
                            i.is_public.to_string(),
                        ]
                    })
                    .collect();
                print(
                    out,
                    &["ID", "NAME", "OS", "STATUS", "PUBLIC"],
                    rows,
                    json!(is),
                );
            }
        },
        AdminCommand::Backends(c) => match c {
            BackendsCommand::Add {
                name,
                host,
                port,
                out,
            } => {
                let b = s.upsert_backend(&name, &host, port).await?;
                print(
                    out,
                    &["ID", "NAME", "HOST", "PORT"],
                    vec![vec![
                        b.id.to_string(),
                        b.name.clone(),
                        b.host.clone(),
                        b.port.to_string(),
                    ]],
                    json!(b),
                );
            }
            BackendsCommand::Drain { backend } => {
                let b = find_backend(s, &backend).await?;
                s.set_backend_flags(b, Some(true), None).await?;
                println!("backend {backend} drained: no new servers will be placed on it");
            }
            BackendsCommand::Undrain { backend } => {
                let b = find_backend(s, &backend).await?;
                s.set_backend_flags(b, Some(false), None).await?;
                println!("backend {backend} accepts new servers again");
            }
            BackendsCommand::List { out } => {
                let bs = s.list_backends().await?;
                let usage = s.backend_usage().await?;
                let rows = bs
                    .iter()
                    .map(|b| {
                        let u = usage.get(&b.id).copied().unwrap_or_default();
                        vec![
                            b.id.to_string(),
                            b.name.clone(),
                            format!("{}:{}", b.host, b.port),
                            b.drained.to_string(),
                            b.offline.to_string(),
                            u.servers.to_string(),
                            u.ram_mib.to_string(),
                        ]
                    })
                    .collect();
                let j = json!(bs.iter().map(|b| json!({"backend": b, "usage": usage.get(&b.id).copied().unwrap_or_default()})).collect::<Vec<_>>());
                print(
                    out,
                    &[
                        "ID", "NAME", "ADDRESS", "DRAINED", "OFFLINE", "SERVERS", "RAM",
                    ],
                    rows,
                    j,
                );
            }
        },
        AdminCommand::Tokens(TokensCommand::Issue {
            user: uname,
            project: pname,
            ttl,
        }) => {
            let u = user(s, &uname).await?;
            let identity = Identity::new(
                store.clone(),
                std::time::Duration::from_secs(ctx.settings.api.token_ttl_secs),
            );
            let selector = pname.map(synnefo_core::service::identity::ProjectSelector::Name);
            let p = identity
                .scope(&u, selector.as_ref())
                .await
                .map_err(|_| anyhow!("{uname} is not a member of that project (or of any)"))?;
            let lifetime =
                chrono::Duration::seconds(ttl.unwrap_or(ctx.settings.api.token_ttl_secs) as i64);
            let issued = identity.issue_for(u, p, lifetime).await?;
            println!("{}", issued.secret);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn find_backend(s: &dyn Store, key: &str) -> anyhow::Result<BackendId> {
    let all = s.list_backends().await?;
    all.iter()
        .find(|b| b.name == key || b.id.to_string() == key)
        .map(|b| b.id)
        .ok_or_else(|| anyhow!("no backend named {key:?}"))
}

/// A random RFC 4122 version-4 UUID string.
fn uuid_v4_like() -> String {
    let secret = synnefo_core::service::identity::new_token_secret();
    let h = &secret[..32];
    let variant = ['8', '9', 'a', 'b'][(h.as_bytes()[16] % 4) as usize];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}
