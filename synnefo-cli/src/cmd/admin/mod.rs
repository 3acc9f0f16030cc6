//! `synnefo admin ...`: users, projects, memberships, quotas, flavors,
//! images, backends and tokens, through
//! [`synnefo_core::service::admin`] (which holds the rules; this module
//! parses arguments and prints).
//!
//! Every listing prints a table, or JSON with `--json`. Passwords are read
//! from `--password-stdin` (or `--password`, which lands in shell history)
//! and stored argon2-hashed.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use synnefo_core::model::{Project, Quota, User};
use synnefo_core::ports::Store;
use synnefo_core::service::admin::{Admin, NewFlavor, NewImage};
use synnefo_core::service::compute::Caller;
use synnefo_core::service::identity::PasswordPolicy;

use crate::common::Context;

mod args;
mod networks;

pub use args::{
    AdminCommand, BackendsCommand, FlavorsCommand, ImagesCommand, MembersCommand, NetworksCommand,
    Output, PasswordArgs, ProjectsCommand, QueueCommand, QuotasCommand, TokensCommand,
    UsersCommand,
};

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

fn user_json(u: &User) -> Value {
    json!({"id": u.id, "name": u.name, "enabled": u.enabled, "is_admin": u.is_admin, "created": u.created})
}

fn limit(v: Option<i64>) -> String {
    v.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// Runs an admin command.
pub async fn run(ctx: &Context, cmd: AdminCommand) -> anyhow::Result<ExitCode> {
    if let AdminCommand::Queue(c) = cmd {
        queue(ctx, c).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let store: Arc<dyn Store> = Arc::new(ctx.store().await?);
    if let AdminCommand::Networks(c) = cmd {
        networks::run(ctx, store, c).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let admin = Admin::new(
        store,
        ctx.settings.ganeti.default_disk_template.clone(),
        Duration::from_secs(ctx.settings.api.token_ttl_secs),
    )
    .with_password_policy(PasswordPolicy::from_limits(&ctx.settings.limits));
    let op = Admin::cli_operator();
    match cmd {
        AdminCommand::Users(c) => users(&admin, &op, c).await?,
        AdminCommand::Projects(c) => projects(&admin, &op, c).await?,
        AdminCommand::Members(c) => members(&admin, &op, c).await?,
        AdminCommand::Quotas(c) => quotas(&admin, &op, c).await?,
        AdminCommand::Flavors(c) => flavors(&admin, &op, c).await?,
        AdminCommand::Images(c) => images(&admin, &op, c).await?,
        AdminCommand::Backends(c) => backends(&admin, &op, c).await?,
        AdminCommand::Queue(_) => unreachable!("handled above: it needs no database"),
        AdminCommand::Networks(_) => unreachable!("handled above: it needs the clusters"),
        AdminCommand::Tokens(TokensCommand::Issue { user, project, ttl }) => {
            let issued = admin
                .issue_token(&op, &user, project.as_deref(), ttl.map(Duration::from_secs))
                .await?;
            println!("{}", issued.secret);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn users(admin: &Admin, op: &Caller, c: UsersCommand) -> anyhow::Result<()> {
    match c {
        UsersCommand::Add {
            name,
            password,
            admin: is_admin,
            project,
            out,
        } => {
            let pw = read_password(&password)?;
            let u = admin
                .create_user(op, &name, &pw, is_admin, project.as_deref())
                .await?;
            print(
                out,
                &["ID", "NAME", "ADMIN"],
                vec![vec![u.id.clone(), u.name.clone(), u.is_admin.to_string()]],
                user_json(&u),
            );
        }
        UsersCommand::List { out } => {
            let users = admin.list_users(op).await?;
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
            admin.user(op, &name).await?;
            let pw = read_password(&password)?;
            admin.set_password(op, &name, &pw).await?;
            println!("password of {name} changed");
        }
        UsersCommand::Enable { name, disable } => {
            admin.set_enabled(op, &name, !disable).await?;
            println!("{name} {}", if disable { "disabled" } else { "enabled" });
        }
    }
    Ok(())
}

fn print_projects(out: Output, ps: &[Project]) {
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

async fn projects(admin: &Admin, op: &Caller, c: ProjectsCommand) -> anyhow::Result<()> {
    match c {
        ProjectsCommand::Add { name, out } => {
            let p = admin.create_project(op, &name).await?;
            print(
                out,
                &["ID", "NAME"],
                vec![vec![p.id.clone(), p.name.clone()]],
                json!({"id": p.id, "name": p.name}),
            );
        }
        ProjectsCommand::List { out } => print_projects(out, &admin.list_projects(op).await?),
    }
    Ok(())
}

async fn members(admin: &Admin, op: &Caller, c: MembersCommand) -> anyhow::Result<()> {
    match c {
        MembersCommand::Add { user, project } => {
            admin.add_member(op, &user, &project).await?;
            println!("{user} is a member of {project}");
        }
        MembersCommand::List { user, out } => {
            print_projects(out, &admin.user_projects(op, &user).await?)
        }
    }
    Ok(())
}

async fn quotas(admin: &Admin, op: &Caller, c: QuotasCommand) -> anyhow::Result<()> {
    match c {
        QuotasCommand::Set {
            project,
            servers,
            vcpus,
            ram,
        } => {
            let quota = Quota {
                servers,
                vcpus,
                ram_mib: ram,
            };
            admin.set_quota(op, &project, quota).await?;
            println!(
                "quota of {project}: servers {}, vcpus {}, ram {} MiB",
                limit(servers),
                limit(vcpus),
                limit(ram)
            );
        }
        QuotasCommand::Show { project, out } => {
            let pq = admin.quota(op, &project).await?;
            let (q, u) = (pq.quota, pq.usage);
            let rows = vec![
                vec!["servers".into(), limit(q.servers), u.servers.to_string()],
                vec!["vcpus".into(), limit(q.vcpus), u.vcpus.to_string()],
                vec!["ram (MiB)".into(), limit(q.ram_mib), u.ram_mib.to_string()],
            ];
            print(
                out,
                &["RESOURCE", "LIMIT", "IN USE"],
                rows,
                json!({"project": pq.project.name, "quota": q, "usage": u}),
            );
        }
    }
    Ok(())
}

async fn flavors(admin: &Admin, op: &Caller, c: FlavorsCommand) -> anyhow::Result<()> {
    match c {
        FlavorsCommand::Add {
            name,
            vcpus,
            ram,
            disk,
            disk_template,
            private,
            out,
        } => {
            let f = admin
                .create_flavor(
                    op,
                    NewFlavor {
                        name,
                        vcpus,
                        ram_mib: ram,
                        disk_gib: disk,
                        disk_template,
                        is_public: !private,
                    },
                )
                .await?;
            print(
                out,
                &["ID", "NAME"],
                vec![vec![f.id.to_string(), f.name.clone()]],
                json!(f),
            );
        }
        FlavorsCommand::List { out } => {
            let fs = admin.list_flavors(op).await?;
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
    }
    Ok(())
}

async fn images(admin: &Admin, op: &Caller, c: ImagesCommand) -> anyhow::Result<()> {
    match c {
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
            let img = admin
                .register_image(
                    op,
                    NewImage {
                        id,
                        name,
                        os_type,
                        osparams: osparams.into_iter().collect::<BTreeMap<_, _>>(),
                        metadata: properties.into_iter().collect(),
                        min_disk_gib: min_disk,
                        min_ram_mib: min_ram,
                        private_to,
                    },
                )
                .await?;
            print(
                out,
                &["ID", "NAME"],
                vec![vec![img.id.clone(), img.name.clone()]],
                json!(img),
            );
        }
        ImagesCommand::List { out } => {
            let is = admin.list_images(op).await?;
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
    }
    Ok(())
}

async fn backends(admin: &Admin, op: &Caller, c: BackendsCommand) -> anyhow::Result<()> {
    match c {
        BackendsCommand::Add {
            name,
            host,
            port,
            out,
        } => {
            let b = admin.add_backend(op, &name, &host, port).await?;
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
            admin.set_drained(op, &backend, true).await?;
            println!("backend {backend} drained: no new servers will be placed on it");
        }
        BackendsCommand::Undrain { backend } => {
            admin.set_drained(op, &backend, false).await?;
            println!("backend {backend} accepts new servers again");
        }
        BackendsCommand::List { out } => {
            let (bs, usage) = admin.list_backends(op).await?;
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
    }
    Ok(())
}

/// `admin queue`: the RabbitMQ dead-letter queue of `[amqp]` and
/// `backend_prefix_id` (no database needed).
async fn queue(ctx: &Context, c: QueueCommand) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let mut config = synnefo_amqp::AmqpConfig::from_settings(&s.amqp, &s.backend_prefix_id);
    config.connection_name = format!("synnefo-admin-{}", std::process::id());
    let bus = synnefo_amqp::AmqpBus::connect(config)
        .await
        .map_err(|e| crate::common::Unavailable(format!("message bus: {e}")))?;
    let result = match c {
        QueueCommand::Inspect { max, out } => {
            let letters = bus.dead_letters(max as usize, false).await;
            letters.map(|letters| {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                let rows = letters
                    .iter()
                    .map(|d| {
                        let body = text(&d.body);
                        vec![
                            d.routing_key.clone(),
                            d.queue.clone().unwrap_or_default(),
                            d.reason.clone().unwrap_or_default(),
                            body.chars().take(120).collect(),
                        ]
                    })
                    .collect();
                let j = json!(
                    letters
                        .iter()
                        .map(|d| json!({
                            "routing_key": d.routing_key,
                            "queue": d.queue,
                            "reason": d.reason,
                            "body": text(&d.body),
                        }))
                        .collect::<Vec<_>>()
                );
                print(out, &["ROUTING KEY", "QUEUE", "REASON", "BODY"], rows, j);
            })
        }
        QueueCommand::Retry { max } => bus.retry_dead_letters(max as usize).await.map(|n| {
            println!("{n} dead letter(s) put back on their queue");
        }),
    };
    bus.close().await;
    result.map_err(|e| anyhow::anyhow!("dead-letter queue: {e}"))
}
