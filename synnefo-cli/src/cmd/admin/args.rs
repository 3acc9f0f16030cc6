//! The arguments of `synnefo admin`.

use clap::{Args, Subcommand};

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
    /// The bus's dead-letter queue (RabbitMQ, `[amqp]`)
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Networks, their address pools and the address history
    #[command(subcommand)]
    Networks(NetworksCommand),
}

/// `admin networks`.
#[derive(Debug, Subcommand)]
pub enum NetworksCommand {
    /// Create (or complete) a public network: shared, external (floating
    /// IPs come from it), joined by every new server; idempotent by name
    CreatePublic {
        /// Name
        name: String,
        /// Its IPv4 subnet (a /16 to a /30)
        #[arg(long)]
        subnet: String,
        /// Gateway address, or "none" [default: the subnet's first address]
        #[arg(long)]
        gateway: Option<String>,
        /// Synnefo network flavor (wiring from `[network.flavors.<it>]`)
        #[arg(long, default_value = "IP_LESS_ROUTED")]
        flavor: String,
        /// Ganeti NIC mode instead of the flavor's (needs --link)
        #[arg(long, requires = "link")]
        mode: Option<String>,
        /// Ganeti NIC link instead of the flavor's (needs --mode)
        #[arg(long, requires = "mode")]
        link: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// List every network with its subnets and clusters
    List {
        #[command(flatten)]
        out: Output,
    },
    /// Delete a network (removed from every cluster first; refused while
    /// ports or floating IPs use it)
    Delete {
        /// Network id
        id: String,
    },
    /// Every IPv4 pool: size and addresses held
    Pools {
        #[command(flatten)]
        out: Output,
    },
    /// The links and MAC prefixes networks hold from their flavors' pools
    /// (`PHYSICAL_VLAN` links, `MAC_FILTERED` prefixes)
    Leases {
        #[command(flatten)]
        out: Output,
    },
    /// Who held an address when (for abuse reports), newest first
    IpHistory {
        /// The address
        address: std::net::IpAddr,
        /// At most this many entries
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        #[command(flatten)]
        out: Output,
    },
}

/// `admin queue`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Show dead letters (oldest first) with their routing key and reason;
    /// they stay in the queue
    Inspect {
        /// At most this many
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        max: u32,
        #[command(flatten)]
        out: Output,
    },
    /// Put dead letters back on their original queue (oldest first), e.g.
    /// after fixing what made them fail; each is republished before it is
    /// removed, so nothing is lost
    Retry {
        /// At most this many
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        max: u32,
    },
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
