//! The keystone-mode authorizer Lambda: settings and Keystone client once per cold start, then events.

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

fn main() -> Result<(), Error> {
    zaqar::app::lambda_runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    zaqar::app::init_tracing();
    let keystone = zaqar_authorizer::keystone_from_env().await;
    let keystone = &keystone;
    run(service_fn(move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
        Ok::<_, Error>(zaqar_authorizer::authorize(keystone, &event.payload).await)
    }))
    .await
}
