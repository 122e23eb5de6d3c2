//! Admin resource group.

use zaqar::route::Group;
use zaqar::transport::{self, Prepared};
use zaqar::{ApiError, ApiRequest, ApiResponse, App};

pub async fn handle(app: &App, req: ApiRequest) -> ApiResponse {
    transport::respond(match transport::prepare(app, &req, Group::Admin) {
        Ok(Prepared::Respond(resp)) => Ok(resp),
        Ok(_) => Err(ApiError::unavailable("Not implemented yet.")),
        Err(e) => Err(e),
    })
}
