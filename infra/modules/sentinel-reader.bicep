// Grants the detector's identity Log Analytics Reader on the Sentinel workspace (deployed at the
// workspace's own resource group, which may be in another subscription) and returns its customerId.
targetScope = 'resourceGroup'

@description('Name of the Sentinel Log Analytics workspace in this resource group.')
param workspaceName string

@description('Principal id of the Function App managed identity.')
param principalId string

var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('The workspace GUID the query API wants (properties.customerId).')
output customerId string = workspace.properties.customerId
