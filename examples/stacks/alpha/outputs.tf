output "service_name" {
  value = terraform_data.service.output.name
}

output "replicas" {
  value = terraform_data.service.output.replicas
}

output "deployment_id" {
  value = terraform_data.deployment.id
}
