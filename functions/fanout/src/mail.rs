//! `mailto:` subscribers: Amazon SES in AWS; plain SMTP when `ZAQAR_SMTP_URL` (`smtp://host:port`,
//! optionally `smtp://user:pass@host:port`) is set, as on the local stack. No TLS to the SMTP relay:
//! it is meant for a relay on the same host or network. Credentials never reach a log line.
//!
//! Zaqar mails the notification JSON as the text; its confirmation e-mail links to an operator-run
//! `external_confirmation_url`, which this service does not have, so the confirmation e-mail carries
//! the pre-signed request itself (path, headers, body) for the subscriber to send.

use serde_json::Value;
use std::time::Duration;
use zaqar::json::python_dumps;
use zaqar::App;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Notification,
    Confirmation,
}

#[derive(Debug)]
pub enum MailError {
    Permanent(String),
    Transient(String),
}

struct Mail {
    from: String,
    to: String,
    subject: String,
    text: String,
}

fn compose(app: &App, to: &str, subject: Option<&str>, options: &Value, doc: &Value, kind: MailKind) -> Mail {
    let opt = |k: &str| options.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let queue = doc.get("queue_name").and_then(Value::as_str).unwrap_or_default();
    match kind {
        MailKind::Notification => Mail {
            from: opt("from").unwrap_or_else(|| app.config.mail_from.clone()),
            to: to.into(),
            subject: subject.map(str::to_string).or_else(|| opt("subject")).unwrap_or_default(),
            text: python_dumps(doc),
        },
        MailKind::Confirmation => {
            let field = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let base = app.config.public_url.clone().unwrap_or_default();
            let text = format!(
                "{message}\n\nTo confirm (or, with {{\"confirmed\": false}}, to cancel), send:\n\n\
                 PUT {base}{path}\nClient-ID: <any UUID>\nX-Project-ID: {project}\nURL-Signature: {sig}\n\
                 URL-Methods: PUT\nURL-Paths: {path}\nURL-Expires: {expires}\nContent-Type: application/json\n\n\
                 {{\"confirmed\": true}}\n",
                message = field("Message"),
                path = field("URL-Paths"),
                project = field("X-Project-ID"),
                sig = field("URL-Signature"),
                expires = field("URL-Expires"),
            );
            Mail {
                from: app.config.mail_from.clone(),
                to: to.into(),
                subject: format!("{} for queue {queue}", field("Message_Type")),
                text,
            }
        }
    }
}

pub async fn send(
    app: &App,
    to: &str,
    subject: Option<&str>,
    options: &Value,
    doc: &Value,
    kind: MailKind,
    timeout: Duration,
) -> Result<(), MailError> {
    let mail = compose(app, to, subject, options, doc, kind);
    match app.config.smtp_url.as_deref() {
        Some(smtp) => send_smtp(smtp, mail, timeout).await,
        None => send_ses(mail).await,
    }
}

async fn send_smtp(smtp_url: &str, mail: Mail, timeout: Duration) -> Result<(), MailError> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let url = url::Url::parse(smtp_url).map_err(|_| MailError::Permanent("ZAQAR_SMTP_URL is not a URL".into()))?;
    let host = url.host_str().ok_or_else(|| MailError::Permanent("ZAQAR_SMTP_URL has no host".into()))?;
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(url.port().unwrap_or(25))
        .timeout(Some(timeout));
    if !url.username().is_empty() {
        let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy().into_owned();
        let pass = percent_encoding::percent_decode_str(url.password().unwrap_or("")).decode_utf8_lossy().into_owned();
        builder = builder.credentials(Credentials::new(user, pass));
    }
    let mailer = builder.build();
    let bad = |what: &str| MailError::Permanent(format!("invalid {what} address"));
    let message = Message::builder()
        .from(mail.from.parse::<Mailbox>().map_err(|_| bad("sender"))?)
        .to(mail.to.parse::<Mailbox>().map_err(|_| bad("recipient"))?)
        .subject(mail.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(mail.text)
        .map_err(|_| MailError::Permanent("the e-mail could not be built".into()))?;
    match mailer.send(message).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permanent() => Err(MailError::Permanent(format!(
            "SMTP refused the e-mail ({})",
            e.status().map(|c| c.to_string()).unwrap_or_default()
        ))),
        Err(_) => Err(MailError::Transient("SMTP delivery failed".into())),
    }
}

async fn send_ses(mail: Mail) -> Result<(), MailError> {
    use aws_sdk_sesv2::error::ProvideErrorMetadata;
    use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
    static SES: tokio::sync::OnceCell<aws_sdk_sesv2::Client> = tokio::sync::OnceCell::const_new();
    // Start-up read the same variables (`App::from_env`), so this cannot fail in a running function.
    let sdk = || async { zaqar::app::sdk_config().map(|sdk| aws_sdk_sesv2::Client::new(&sdk)) };
    let client = match SES.get_or_try_init(sdk).await {
        Ok(client) => client,
        Err(e) => return Err(MailError::Transient(format!("no SES client: {e}"))),
    };
    let content = |text: String| Content::builder().data(text).charset("UTF-8").build();
    let (subject, text) = match (content(mail.subject), content(mail.text)) {
        (Ok(s), Ok(t)) => (s, t),
        _ => return Err(MailError::Permanent("the e-mail could not be built".into())),
    };
    let message = Message::builder().subject(subject).body(Body::builder().text(text).build()).build();
    let result = client
        .send_email()
        .from_email_address(mail.from)
        .destination(Destination::builder().to_addresses(mail.to).build())
        .content(EmailContent::builder().simple(message).build())
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) => {
            let code = e.code().unwrap_or("unknown").to_string();
            let permanent = matches!(
                code.as_str(),
                "MessageRejected"
                    | "BadRequestException"
                    | "MailFromDomainNotVerifiedException"
                    | "AccountSuspendedException"
            );
            if permanent {
                Err(MailError::Permanent(format!("SES: {code}")))
            } else {
                Err(MailError::Transient(format!("SES: {code}")))
            }
        }
    }
}
