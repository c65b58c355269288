// Read access for the detector's identity on the Sentinel workspace, deployed at the workspace's own
// resource group (which may be in another subscription).
//
// 'tables' (default): table-level RBAC, the least privilege Azure supports. A custom role at the workspace
// lets the identity read the workspace and run queries but reads no table's data; the built-in Reader role
// on each table the detector queries (AzureActivity, BehaviorAnalytics) grants that table's data and no
// other. The person deploying needs rights to create role definitions (Owner or User Access Administrator).
// 'workspace': the built-in Log Analytics Reader on the whole workspace (every table), for deployers who
// may assign roles but not define them.
targetScope = 'resourceGroup'

@description('Name of the Sentinel Log Analytics workspace in this resource group.')
param workspaceName string

@description('Principal id of the Function App managed identity.')
param principalId string

@description('tables: read only the tables the detector queries (custom role + Reader per table); workspace: Log Analytics Reader on the workspace.')
@allowed([
  'tables'
  'workspace'
])
param access string = 'tables'

@description('The tables the detector queries.')
param tableNames array = [
  'AzureActivity'
  'BehaviorAnalytics'
]

var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893'
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
// The tables to assign Reader on: all of them in 'tables' mode, none otherwise (a loop over an empty
// array deploys nothing).
var tableReaderNames = access == 'tables' ? tableNames : []

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource tables 'Microsoft.OperationalInsights/workspaces/tables@2023-09-01' existing = [for table in tableNames: {
  parent: workspace
  name: table
}]

// One definition per workspace (its name is derived from the workspace id), shared by every detector
// deployed against it; the role name carries the workspace's unique string because role names are
// unique in a tenant.
resource queryWithoutData 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (access == 'tables') {
  name: guid(workspace.id, 'workspace query without table data')
  properties: {
    roleName: 'Log Analytics query without table data (${workspaceName} ${uniqueString(workspace.id)})'
    description: 'Read the workspace and run queries; table data needs a Reader assignment on each table.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.OperationalInsights/workspaces/read'
          'Microsoft.OperationalInsights/workspaces/query/read'
        ]
        notActions: [
          'Microsoft.OperationalInsights/workspaces/sharedKeys/read'
        ]
      }
    ]
    // Custom roles are assignable at management group, subscription or resource group level, not at a
    // resource: the workspace's resource group, and the one assignment below is on the workspace itself.
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

resource queryAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (access == 'tables') {
  name: guid(workspace.id, principalId, 'workspace query without table data')
  scope: workspace
  dependsOn: [
    queryWithoutData
  ]
  properties: {
    // The subscription-level id (a definition's .id deployed here would carry this resource group's path).
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queryWithoutData.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableReaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (table, i) in tableReaderNames: {
  name: guid(tables[i].id, principalId, reader)
  scope: tables[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource workspaceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (access == 'workspace') {
  name: guid(workspace.id, principalId, logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
